// Copies the buf-generated code (the repository's gen/ts, from `make gen`)
// into this package's gen/, so the package is self-contained: dist/ imports
// ../gen/..., which resolves inside the package both here and once installed
// from an `npm pack` tarball. A copy, byte for byte, made at build time: the
// generated code stays generated (never edited, never committed here).
import { cpSync, existsSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const source = join(here, "..", "..", "gen", "ts");
const target = join(here, "gen");
if (!existsSync(join(source, "aigc", "v1", "aigc_service_pb.js"))) {
  console.error(`copy-gen: no generated code in ${source}: run \`make gen\` first`);
  process.exit(1);
}
rmSync(target, { recursive: true, force: true });
cpSync(source, target, { recursive: true });

"""bench/RESULTS.md and bench/results.png from one run's results (the dict run.py also saves as JSON).

python bench/report.py [bench/results.json]    re-render both from a saved run (after editing this file)
"""

from __future__ import annotations

import json
import pathlib
import sys

from bench import procfs

GATEWAY_ROLES = ("server", "envoy", "peer")  # whatever runs on the gateway cores
# The rows every other is set against, in this order (same run, same cores, same upstream).
PEERS = ("Portkey", "vllm-router", "Envoy proxy")
PROFILE_ROWS = 20  # packages listed by own time; the rest are summed
LOAD_ROLES = ("upstream", "load tool")


# --- numbers -------------------------------------------------------------------------------------


def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _per_request_us(row: dict, role: str) -> float | None:
    seconds = row["cpu_s"].get(role)
    return None if seconds is None or not row["requests"] else seconds / row["requests"] * 1e6


def _busy(row: dict, roles: tuple[str, ...], cpus: str) -> float | None:
    """Share of the given cores these roles kept busy over the run."""
    used = [row["cpu_s"][r] for r in roles if r in row["cpu_s"]]
    if not used:
        return None
    return sum(used) / row["wall_s"] / len(procfs.cpu_list(cpus))


def _direct(rows: list[dict], row: dict) -> dict | None:
    return next(
        (
            r
            for r in rows
            if r["path"] == "direct" and r["kind"] == row["kind"] and r["concurrency"] == row["concurrency"]
        ),
        None,
    )


def _delta(value: float | None, base: float | None) -> str:
    """value - base, signed; "-" when either is missing."""
    return "-" if value is None or base is None else f"{value - base:+,.1f}"


# --- console lines while it runs -----------------------------------------------------------------


def row_line(row: dict) -> str:
    cpu = ", ".join(
        f"{role} {_f(_per_request_us(row, role), 0)} us/req" for role in row["cpu_s"] if role != "load tool"
    )
    return (
        f"{row['path']:<22} {row['kind']:<6} c{row['concurrency']:<4} {row['rate']:>9,.0f} req/s"
        f"  p50 {_f(row['p50_ms'])} p99 {_f(row['p99_ms'])} ms  errors {row['errors']}  {cpu}"
    )


def ttfb_line(entry: dict) -> str:
    t = entry["ttfb_ms"]
    return (
        f"{entry['path']:<22} TTFB   c{entry['concurrency']:<4} {entry['rate']:>9,.0f} streams/s"
        f"  TTFB p50 {_f(t['p50'])} p99 {_f(t['p99'])} ms  errors {entry['errors']}"
    )


def burst_line(entry: dict) -> str:
    t = entry["ttfb_ms"]
    rss = ", ".join(f"{k} {v:.0f} MiB" for k, v in entry["rss_mib"].items())
    return (
        f"{entry['path']:<22} burst  {entry['streams']:>5} streams: all open {entry['all_open']}"
        f" after {_f(entry['open_after_s'], 2)} s, TTFB p50 {_f(t['p50'])} p99 {_f(t['p99'])} ms,"
        f" upstream open {entry['upstream_open']}, errors {entry['errors']}; {rss}"
    )


# --- markdown ------------------------------------------------------------------------------------


def _table(header: list[str], align: str, rows: list[list[str]]) -> list[str]:
    """A markdown table; `align` has one letter per column: l(eft), r(ight), c(enter)."""
    marks = {"l": "---", "r": "--:", "c": ":-:"}
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(marks[a] for a in align) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _throughput_table(results: dict, kind: str) -> list[str]:
    options = results["options"]
    header = ["path", "c", "req/s", "chunks/s", "p50 ms", "p99 ms", "p50 - direct", "server CPU µs/req"]
    header += ["Envoy CPU µs/req", "peer CPU µs/req", "upstream CPU µs/req", "gateway cores busy"]
    header += ["load cores busy"]
    header += ["errors (tool / server)", "RSS server MiB", "RSS Envoy MiB"]
    rows = []
    for row in (r for r in results["rows"] if r["kind"] == kind):
        direct = _direct(results["rows"], row)
        failed = "-" if row["server_failures"] is None else str(row["server_failures"])
        rows.append(
            [
                row["path"],
                str(row["concurrency"]),
                f"{row['rate']:,.0f}",
                _f(row["rate"] * options["chunks"] if kind == "stream" else None, 0),
                _f(row["p50_ms"]),
                _f(row["p99_ms"]),
                _delta(row["p50_ms"], direct and direct["p50_ms"]),
                *(_f(_per_request_us(row, role), 0) for role in ("server", "envoy", "peer", "upstream")),
                _pct(_busy(row, GATEWAY_ROLES, options["gateway_cpus"])),
                _pct(_busy(row, LOAD_ROLES, options["load_cpus"])),
                f"{row['errors']} / {failed}",
                _f(row["rss_mib"].get("server"), 0),
                _f(row["rss_mib"].get("envoy"), 0),
            ]
        )
    return _table(header, "lrrrrrrrrrrrrrrr", rows)


def _ttfb_direct(results: dict, concurrency: int) -> dict | None:
    return next(
        (d for d in results["ttfb"] if d["path"] == "direct" and d["concurrency"] == concurrency), None
    )


def _ttfb_table(results: dict) -> list[str]:
    header = ["path", "c", "streams/s", "TTFB p50 ms", "TTFB p99 ms", "TTFB p50 - direct"]
    header += ["whole stream p50 ms", "messages per stream", "errors", "client CPU"]
    rows = []
    for e in results["ttfb"]:
        direct = _ttfb_direct(results, e["concurrency"])
        rows.append(
            [
                e["path"],
                str(e["concurrency"]),
                f"{e['rate']:,.0f}",
                _f(e["ttfb_ms"]["p50"], 2),
                _f(e["ttfb_ms"]["p99"], 2),
                _delta(e["ttfb_ms"]["p50"], direct and direct["ttfb_ms"]["p50"]),
                _f(e["total_p50_ms"]),
                _f(e["messages_per_stream"]),
                str(e["errors"]),
                f"{e['client_cpu_s'] / e['seconds']:.0%} of a core" if e["seconds"] else "-",
            ]
        )
    return _table(header, "lrrrrrrrrr", rows)


def _burst_table(results: dict) -> list[str]:
    header = ["path", "streams", "all open at once", "errors", "last first byte after", "TTFB p50 ms"]
    header += ["TTFB p99 ms", "upstream streams open then", "RSS server then", "RSS Envoy then"]
    header += ["accept-queue overflows"]
    rows = []
    for e in results["bursts"]:
        rss = e["rss_mib"]
        rows.append(
            [
                e["path"],
                f"{e['streams']:,}",
                "yes" if e["all_open"] else "**no**",
                f"{e['errors']} ({e['detail']})" if e["errors"] else "0",
                f"{_f(e['open_after_s'], 2)} s",
                _f(e["ttfb_ms"]["p50"]),
                _f(e["ttfb_ms"]["p99"]),
                "-" if e["upstream_open"] is None else f"{e['upstream_open']:,}",
                f"{_f(rss.get('server'), 0)} MiB",
                f"{_f(rss.get('envoy'), 0)} MiB",
                f"{e['listen_overflows']:,}",
            ]
        )
    return _table(header, "lrcrrrrrrrr", rows)


def _profile_section(profile: dict | None, notes: list[str]) -> list[str]:
    if not profile:
        return ["Not recorded in this run.", *notes]
    total = profile["samples"] or 1
    shown, rest = profile["by_package"][:PROFILE_ROWS], profile["by_package"][PROFILE_ROWS:]
    by_package = [
        [name, f"{n / total:.1%}", str(n), "-" if inclusive is None else f"{inclusive / total:.0%}"]
        for name, n, inclusive in shown
    ]
    if rest:
        n = sum(entry[1] for entry in rest)
        by_package.append([f"{len(rest)} others", f"{n / total:.1%}", str(n), "-"])
    functions = [[f"`{name}`", f"{n / total:.1%}"] for name, n in profile["top_functions"]]
    return [
        f"py-spy, {profile['summary']}, over {profile['seconds']:.0f} s of {profile['concurrency']}"
        f" concurrent unary gRPC `Chat` calls ({profile['rate_while_profiling']:,.0f} req/s while sampled:"
        f" py-spy pauses the process for each sample). Flame graph: [{profile['svg']}]({profile['svg']}).",
        "",
        "Samples are of the thread holding the GIL (`--gil --native`): the event loop's Python and the C it"
        " calls. Own time: the innermost frame is in that package. Inclusive: a Python frame of the package"
        " is on the stack (so it includes what the package calls in other packages).",
        "",
        *_table(["package", "own time", "samples", "inclusive"], "lrrr", by_package),
        "",
        "Functions with the most own time:",
        "",
        *_table(["function (file)", "own time"], "lr", functions),
    ]


def _find(rows: list[dict], path_prefix: str, kind: str, concurrency: int) -> dict | None:
    return next(
        (
            r
            for r in rows
            if r["path"].startswith(path_prefix) and r["kind"] == kind and r["concurrency"] == concurrency
        ),
        None,
    )


def _gateway_us(row: dict | None) -> float | None:
    """CPU per request of everything on the gateway cores (server + Envoy, or the peer)."""
    if not row or not row["requests"]:
        return None
    used = [row["cpu_s"][r] for r in GATEWAY_ROLES if r in row["cpu_s"]]
    return sum(used) / row["requests"] * 1e6 if used else None


def _ratio(value: float | None, base: float | None) -> str:
    return "-" if not value or not base else f"{value / base:.2f}x"


def _ttfb_added(results: dict, path: str, concurrency: int) -> float | None:
    mine = next((e for e in results["ttfb"] if e["path"] == path and e["concurrency"] == concurrency), None)
    base = _ttfb_direct(results, concurrency)
    if not mine or not base or mine["ttfb_ms"]["p50"] is None or base["ttfb_ms"]["p50"] is None:
        return None
    return mine["ttfb_ms"]["p50"] - base["ttfb_ms"]["p50"]


def _peers_table(results: dict) -> list[str]:
    """Every path's figures and their ratios to each peer's from this run (the only comparison
    that holds: another machine or another day is another load)."""
    rows, top = results["rows"], max(results["options"]["concurrency"])
    low = min(results["options"]["ttfb_concurrency"])
    peers = [p for p in PEERS if _find_exact(rows, p, "unary", top)]
    paths = [p for p in dict.fromkeys(r["path"] for r in rows) if p != "direct"]
    measures = [
        (f"unary req/s, c{top}", lambda p: (r := _find_exact(rows, p, "unary", top)) and r["rate"], 0),
        ("CPU µs per unary call", lambda p: _gateway_us(_find_exact(rows, p, "unary", top)), 0),
        ("CPU µs per stream", lambda p: _gateway_us(_find_exact(rows, p, "stream", top)), 0),
        (f"added TTFB ms, c{low}", lambda p: _ttfb_added(results, p, low), 2),
    ]
    header = ["path", *(name for name, _, _ in measures)]
    header += [f"{name.split(',')[0]} / {peer}" for name, _, _ in measures[:3] for peer in peers]
    table = []
    for path in paths:
        values = [get(path) for _, get, _ in measures]
        cells = [_f(v, d) for v, (_, _, d) in zip(values, measures, strict=True)]
        ratios = [_ratio(values[i], measures[i][1](peer)) for i in range(3) for peer in peers]
        table.append([path, *cells, *ratios])
    return _table(header, "l" + "r" * (len(header) - 1), table)


def _find_exact(rows: list[dict], path: str, kind: str, concurrency: int) -> dict | None:
    return next(
        (r for r in rows if r["path"] == path and r["kind"] == kind and r["concurrency"] == concurrency),
        None,
    )


def _ms_cpu(row: dict, role: str) -> float:
    return (_per_request_us(row, role) or 0) / 1000


def _summary(results: dict) -> list[str]:
    """A few sentences from the figures, so the reader does not have to dig."""
    out: list[str] = []
    rows, top = results["rows"], max(results["options"]["concurrency"])
    for kind, noun in (("unary", "Unary"), ("stream", "Streams")):
        grpc, http = _find(rows, "gRPC", kind, top), _find(rows, "HTTP via Envoy", kind, top)
        direct = _find(rows, "direct", kind, top)
        if not (grpc and direct and grpc["rate"]):
            continue
        per_core = 1000 / _ms_cpu(grpc, "server") if _ms_cpu(grpc, "server") else 0
        text = (
            f"- **{noun}, c{top}**: gRPC {grpc['rate']:,.0f}/s, {_ms_cpu(grpc, 'server'):.1f} ms of server"
            f" CPU per request (~{per_core:,.0f}/s per core), p50 {_f(grpc['p50_ms'])} ms"
        )
        if http:
            text += (
                f"; HTTP through Envoy {http['rate']:,.0f}/s, {_ms_cpu(http, 'server'):.1f} ms server +"
                f" {_ms_cpu(http, 'envoy'):.2f} ms Envoy CPU per request, p50 {_f(http['p50_ms'])} ms"
            )
        upstream_us = _per_request_us(direct, "upstream")
        capacity = f", ~{1e6 / upstream_us:,.0f}/s per core by its own CPU time" if upstream_us else ""
        text += (
            f". The upstream alone: {direct['rate']:,.0f}/s while sharing its core with the load tool"
            f"{capacity}; {direct['rate'] / grpc['rate']:,.0f}x the gateway's gRPC rate."
        )
        out.append(text)
    low = min(results["options"]["ttfb_concurrency"])
    base = _ttfb_direct(results, low)
    unloaded = [e for e in results["ttfb"] if e["concurrency"] == low and e["path"] != "direct"]
    if base and unloaded:
        parts = [
            f"{e['path']} {_delta(e['ttfb_ms']['p50'], base['ttfb_ms']['p50'])} ms"
            f" ({_delta(e['total_p50_ms'], base['total_p50_ms'])} ms to the end)"
            for e in unloaded
        ]
        out.append(
            f"- **Added latency, c{low}** (time to first byte p50 against direct"
            f" {_f(base['ttfb_ms']['p50'], 2)} ms): " + "; ".join(parts) + "."
        )
    biggest = max(results["options"]["burst_sizes"])
    for path in dict.fromkeys(b["path"] for b in results["bursts"]):
        if path in ("direct", "Envoy proxy"):
            continue
        mine = [b for b in results["bursts"] if b["path"] == path]
        peak = next((b for b in mine if b["streams"] == biggest), None)
        if not peak:
            continue
        held = "held" if peak["all_open"] and not peak["errors"] else "**not held**"
        rss, first = peak["rss_mib"], mine[0]["rss_mib"]
        out.append(
            f"- **{biggest:,} streams {held}** via {path}: {peak['errors']} errors, all open"
            f" {_f(peak['open_after_s'], 1)} s after the burst began (TTFB p50 {_f(peak['ttfb_ms']['p50'])},"
            f" p99 {_f(peak['ttfb_ms']['p99'])} ms); RSS server {_f(first.get('server'), 0)} ->"
            f" {_f(rss.get('server'), 0)} MiB, Envoy {_f(first.get('envoy'), 0)} ->"
            f" {_f(rss.get('envoy'), 0)} MiB"
            f" from {mine[0]['streams']:,} to {biggest:,} streams."
        )
    return out


def _limits(results: dict) -> list[str]:
    """What may have limited the figures, read off the CPU columns."""
    options, out = results["options"], []
    gateway_rows = [r for r in results["rows"] if r["path"].startswith(("gRPC", "HTTP"))]
    if gateway_rows:
        low = min(_busy(r, GATEWAY_ROLES, options["gateway_cpus"]) or 0 for r in gateway_rows)
        high = max(_busy(r, LOAD_ROLES, options["load_cpus"]) or 0 for r in gateway_rows)
        out.append(
            f"- Gateway rows: the gateway cores were at least {low:.0%} busy in every scenario and the load"
            f" cores at most {high:.0%}: the gateway set those rates, not the load side."
        )
    direct = [r for r in results["rows"] if r["path"] == "direct"]
    if direct:
        high = max(_busy(r, LOAD_ROLES, options["load_cpus"]) or 0 for r in direct)
        out.append(
            f"- Direct rows: the load cores (upstream + wrk) reached {high:.0%}: wrk and the upstream share"
            " one core, so these rows understate the upstream; they are still far above the gateway."
        )
    proxy = [r for r in results["rows"] if r["path"] == "Envoy proxy"]
    if proxy:
        envoy = max(_busy(r, GATEWAY_ROLES, options["gateway_cpus"]) or 0 for r in proxy)
        loadside = max(_busy(r, LOAD_ROLES, options["load_cpus"]) or 0 for r in proxy)
        if max(envoy, loadside) >= 0.9:
            bound = "whichever core was busiest set these rates"
        else:
            bound = "with neither saturated, round trips between the two cores (on a VM) bound these rows"
        out.append(
            f"- Envoy proxy rows: up to {envoy:.0%} of the gateway cores (the reference Envoy) and"
            f" {loadside:.0%} of the load cores were busy; {bound}. A reference, not a benchmark of Envoy."
        )
    rows = results["rows"]
    if rows and "other_cpu_s" in rows[0]:
        worst = max(rows, key=lambda r: r["other_cpu_s"] / r["wall_s"])
        wall = sum(r["wall_s"] for r in rows)
        irq = max(r["irq_cpu_s"] / r["wall_s"] for r in rows)
        out.append(
            f"- Other processes on the machine (not this bench) used up to"
            f" {worst['other_cpu_s'] / worst['wall_s']:.0%} of a core during a measured run ({worst['path']}"
            f" {worst['kind']} c{worst['concurrency']}); the hypervisor stole"
            f" {sum(r['steal_s'] for r in rows) / wall:.1%} of a core on average; the kernel's interrupt work"
            f" (loopback networking, charged to no process) took up to {irq:.0%} of a core. Other processes"
            " widen run-to-run differences most: compare runs whose figure here is low."
        )
    return out + [f"- {note}" for note in results["notes"]]


def _load_line(results: dict, cores: int) -> str:
    load = results.get("load_average")
    if not load:
        return "- load average: not recorded"
    busy = max(load) >= cores / 2
    verdict = (
        f"**taken under load** (more than {cores / 2:g} runnable on {cores} cores): read the ratios,"
        " not the figures"
        if busy
        else "a quiet machine"
    )
    return f"- 1-minute load average {load[0]:.2f} at the start, {load[1]:.2f} at the end: {verdict}"


def markdown(results: dict) -> str:
    m, o = results["machine"], results["options"]
    variants = ", ".join(f"{v['label']} ({v['env'] or 'no extra env'})" for v in o["variant"])
    setup = [
        f"- {results['when']}, whole run {results['elapsed_s']:.0f} s; commit {m['commit']}",
        _load_line(results, len(procfs.cpu_list(o["gateway_cpus"] + "," + o["load_cpus"]))),
        f"- {m['cpu']}; {m['os']}",
        f"- {m['python']}; Node {m['node']}; Envoy {m['envoy']}; {m['h2load']}; {m['wrk']}",
        f"- pinned with taskset: server + Envoy, the reference Envoy and the peers on cores"
        f" {o['gateway_cpus']}; the fake upstream, load tools, streams client, py-spy and the bench"
        f" itself on cores {o['load_cpus']}",
        f"- upstream answers: {o['chunks']} content chunks, the first after {o['first_token_ms']} ms, then"
        f" {o['chunk_gap_ms']} ms apart; held streams: a chunk every {o['hold_gap_ms']} ms",
        f"- closed loops of {o['seconds']:g} s after {o['warmup']:g} s of warm-up; stack: {variants};"
        f" extra env {o['stack_env'] or 'none'}; extra run_stack.py arguments {o['stack_arg'] or 'none'}",
    ]
    throughput_note = (
        "Latency is of whole requests, to the last byte of a stream; c = requests in flight (closed loop)."
        " CPU per request = utime + stime from /proc over the measured run / requests completed. Envoy is the"
        " reference proxy on its rows and the gateway's Envoy on the HTTP rows. Busy = CPU time / wall time"
        " of those cores. Errors: seen by the tool / failed RPCs in the server's `aigc_requests_total` (gRPC"
        " errors travel in trailers, which h2load does not read). The gateway serves a unary call from the"
        " upstream's stream, so its unary rows do the streaming work upstream too."
    )
    ttfb_note = (
        f"bench/streams.mjs, closed loop for {o['ttfb_seconds']:g} s: from sending the request to the first"
        " byte of the response body (the first message). At c1 this is the added latency; at higher c it is"
        " mostly queueing in the saturated server. Client CPU shows the client is not the limit."
    )
    burst_note = (
        "N streams opened at the same moment; each upstream stream sends its first chunk at once, then"
        f" one every {o['hold_gap_ms']} ms. When the last has its first byte the bench reads RSS and the"
        f" upstream's count of open streams, holds {o['hold']:g} s, then cancels all (and waits for the"
        " cancels to reach the upstream). Errors = streams that failed or ended before the cancel. TTFB here"
        " is queueing: how long the N-th stream waits while the gateway starts the others."
    )
    lines = [
        "# Load bench: the gateway against a fast fake upstream",
        "",
        "Written by `make bench` (bench/run.py) from one run; the method is in [README.md](README.md)."
        " Compare runs on the same machine, not single numbers.",
        "",
        "![requests/s, latency, CPU per request and time to first byte against concurrency](results.png)",
        "",
        "## Summary",
        "",
        *_summary(results),
        "",
        "## Against the peers, same run",
        "",
        "Each path on the same core against the same upstream in this run; CPU is of everything on the"
        " gateway core (server + Envoy, or the peer); a ratio is this path's figure over the peer's (below 1"
        " is less CPU, above 1 more requests/s). Added TTFB: time to first byte p50 less direct's.",
        "",
        *_peers_table(results),
        "",
        "## Machine and setup",
        "",
        *setup,
        "",
        "## Throughput and latency",
        "",
        throughput_note,
        "",
        "### Unary",
        "",
        *_throughput_table(results, "unary"),
        "",
        "### Streams (SSE directly and through Envoy, gRPC server streaming)",
        "",
        *_throughput_table(results, "stream"),
        "",
        "## Time to first byte of streams",
        "",
        ttfb_note,
        "",
        *_ttfb_table(results),
        "",
        "## Streams held open at once",
        "",
        burst_note,
        "",
        *_burst_table(results),
        "",
        f"## Profile of the server: {results['profile']['concurrency'] if results['profile'] else 50}"
        " concurrent unary calls",
        "",
        *_profile_section(results["profile"], results["notes"]),
        "",
        "## What limited the measurement",
        "",
        *_limits(results),
        "",
    ]
    return "\n".join(lines)


# --- the chart -----------------------------------------------------------------------------------


def chart(results: dict, out: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display; imported here so the report module loads without matplotlib
    import matplotlib.pyplot as plt

    rows = results["rows"]
    paths = list(dict.fromkeys(r["path"] for r in rows))
    scenarios = list(dict.fromkeys((r["kind"], r["concurrency"]) for r in rows))
    width = 0.8 / max(1, len(paths))
    colors = {path: f"C{i}" for i, path in enumerate(paths)}
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))

    def row_of(path: str, kind: str, concurrency: int) -> dict | None:
        return next(
            (r for r in rows if r["path"] == path and r["kind"] == kind and r["concurrency"] == concurrency),
            None,
        )

    def bars(ax, value, title: str, ylabel: str, log: bool = True) -> None:
        for i, path in enumerate(paths):
            xs = [x + i * width for x in range(len(scenarios))]
            heights = [value(r) if (r := row_of(path, *scenario)) else 0 for scenario in scenarios]
            ax.bar(xs, heights, width, label=path, color=colors[path])
        ax.set_xticks([x + width * (len(paths) - 1) / 2 for x in range(len(scenarios))])
        ax.set_xticklabels([f"{kind} c{c}" for kind, c in scenarios])
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        if log:
            ax.set_yscale("log")
        ax.grid(axis="y", alpha=0.3)

    bars(axes[0][0], lambda r: r["rate"], "Requests per second (log)", "req/s")
    bars(axes[0][1], lambda r: r["p50_ms"] or 0, "Latency p50, whole request (log)", "ms")

    # CPU per request: the server (solid) with Envoy (hatched) on top.
    ax = axes[1][0]
    bars(
        ax,
        lambda r: ((_per_request_us(r, "server") or 0) + (_per_request_us(r, "peer") or 0)) / 1000,
        "CPU per request: server or peer, + Envoy hatched",
        "ms",
    )
    for i, path in enumerate(paths):
        for x, scenario in enumerate(scenarios):
            row = row_of(path, *scenario)
            if row and _per_request_us(row, "envoy"):
                bottom = (_per_request_us(row, "server") or 0) / 1000
                ax.bar(x + i * width, _per_request_us(row, "envoy") / 1000, width, bottom=bottom,
                       color=colors[path], hatch="//", alpha=0.5)  # fmt: skip
    ax.set_yscale("linear")

    ax = axes[1][1]
    for path in dict.fromkeys(b["path"] for b in results["bursts"]):
        entries = [b for b in results["bursts"] if b["path"] == path]
        xs = [b["streams"] for b in entries]
        color = colors.get(path)
        p50 = [b["ttfb_ms"]["p50"] or float("nan") for b in entries]
        p99 = [b["ttfb_ms"]["p99"] or float("nan") for b in entries]
        ax.plot(xs, p50, marker="o", label=f"{path} p50", color=color)
        ax.plot(xs, p99, ls="--", color=color, alpha=0.6)
    sizes = results["options"]["burst_sizes"]
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(sizes)
    ax.set_xticklabels([f"{n:,}" for n in sizes])
    ax.set_title("Time to first byte, N streams opened at once (p50; p99 dashed)")
    ax.set_xlabel("streams open at once")
    ax.set_ylabel("ms")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(paths), fontsize=9, bbox_to_anchor=(0.5, 0.965))
    fig.suptitle(f"aigc-service load bench, {results['when']} ({results['machine']['cpu']})", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    source = pathlib.Path(args[0] if args else pathlib.Path(__file__).with_name("results.json"))
    results = json.loads(source.read_text())
    chart(results, source.with_name("results.png"))
    source.with_name("RESULTS.md").write_text(markdown(results))
    print(f"wrote {source.with_name('RESULTS.md')} and results.png from {source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

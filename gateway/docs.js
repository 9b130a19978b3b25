// Starts Swagger UI on /docs (gateway/docs.html). A file, not an inline
// script: the page's Content-Security-Policy allows scripts from this origin
// only (script-src 'self', gateway/envoy.yaml).
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    plugins: [SwaggerUIBundle.plugins.DownloadUrl],
    layout: "StandaloneLayout",
    // No validator badge: it would call validator.swagger.io.
    validatorUrl: null
  });
});

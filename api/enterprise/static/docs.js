// Swagger UI for /openapi.json, served from this app (no CDN: plant networks are often offline).
// "Authorize" takes an API token (icswatch token issue); it stays in this page only.
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  persistAuthorization: false,
  tryItOutEnabled: false,
});

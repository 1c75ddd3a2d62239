//! The web UI, built by Vite into `ui/dist` and embedded in the binary: hashed assets are served
//! with a year-long immutable cache, every other path gets `index.html` (the app routes itself).

use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use rust_embed::RustEmbed;

#[derive(RustEmbed)]
#[folder = "../../ui/dist"]
struct Assets;

/// Said at `/` when the binary was built without `ui/dist`.
const NOT_BUILT: &str = "Erigolem API server. This binary was built without the web UI \
(build it with: bash scripts/build-ui.sh, then rebuild).\n\nOpenAPI: /api/v1/openapi.json\n";

/// Whether the binary carries the web UI.
pub fn is_embedded() -> bool {
    Assets::get("index.html").is_some()
}

/// Serves the embedded UI: an asset by path, or `index.html` for any other path.
pub async fn serve(uri: Uri) -> Response {
    let path = uri.path().trim_start_matches('/');
    if let Some(file) = (!path.is_empty()).then(|| Assets::get(path)).flatten() {
        let cache = if path.starts_with("assets/") {
            // Vite puts a content hash in every file name under assets/.
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        };
        return (
            [
                (header::CONTENT_TYPE, mime_header(file.metadata.mimetype())),
                (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
            ],
            file.data,
        )
            .into_response();
    }
    if path.starts_with("assets/") {
        return StatusCode::NOT_FOUND.into_response();
    }
    match Assets::get("index.html") {
        Some(index) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                ),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            ],
            index.data,
        )
            .into_response(),
        None => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            )],
            NOT_BUILT,
        )
            .into_response(),
    }
}

fn mime_header(mime: &str) -> HeaderValue {
    HeaderValue::from_str(mime).unwrap_or(HeaderValue::from_static("application/octet-stream"))
}

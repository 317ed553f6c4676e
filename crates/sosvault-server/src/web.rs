//! The web pages: the control room (`/`), the team screen (`/team`) and the
//! student simulator's page (served by `sosvault demo` only, through
//! [`simulator_router`]).
//!
//! Every file is embedded in the binary at build time (`include_bytes!`), so
//! the running service serves exactly the files it was built with and needs
//! no build step, no CDN and no network. Leaflet's `dist` files come from the
//! npm registry: `build.rs` makes sure `web/node_modules/leaflet` is there
//! (running `npm ci` in `web/` when it is not).
//!
//! Map tiles: by default none (the map is a plain background with markers and
//! a few place labels, so it works offline). Set `SOSVAULT_SERVER_TILE_URL`
//! (e.g. `https://tile.openstreetmap.org/{z}/{x}/{y}.png`) to draw tiles, and
//! `SOSVAULT_SERVER_TILE_ATTRIBUTION` for their credit line. The tile origin
//! is then the only outside origin the pages' Content-Security-Policy allows.
//!
//! The pages talk to the API with the same tokens as any client: an
//! operator's session token (kept in the tab's `sessionStorage`) and a unit's
//! token (pasted, or given in the URL fragment, which never reaches a server).

use std::sync::LazyLock;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// One embedded file.
struct Asset {
    path: &'static str,
    mime: &'static str,
    body: &'static [u8],
}

macro_rules! web_file {
    ($path:literal, $mime:expr) => {
        Asset {
            path: $path,
            mime: $mime,
            body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/web/", $path)),
        }
    };
}

macro_rules! leaflet_file {
    ($path:literal, $mime:expr) => {
        Asset {
            path: concat!("vendor/leaflet/", $path),
            mime: $mime,
            body: include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/web/node_modules/leaflet/dist/",
                $path
            )),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const HTML: &str = "text/html; charset=utf-8";

/// Static files under `/assets/`.
static ASSETS: &[Asset] = &[
    web_file!("css/app.css", CSS),
    web_file!("js/common.js", JS),
    web_file!("js/map.js", JS),
    web_file!("js/control.js", JS),
    web_file!("js/team.js", JS),
    web_file!("js/sim.js", JS),
    web_file!("i18n/en.js", JS),
    web_file!("i18n/hi.js", JS),
    web_file!("img/favicon.svg", "image/svg+xml"),
    leaflet_file!("leaflet.js", JS),
    leaflet_file!("leaflet.css", CSS),
    leaflet_file!("images/layers.png", "image/png"),
    leaflet_file!("images/layers-2x.png", "image/png"),
    leaflet_file!("images/marker-icon.png", "image/png"),
    leaflet_file!("images/marker-icon-2x.png", "image/png"),
    leaflet_file!("images/marker-shadow.png", "image/png"),
];

/// What every page shares (`web/shell.html`): the head with its styles and
/// scripts, the opening of the body and its live regions. A script or a
/// language added there is on every page.
const SHELL: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/web/shell.html"));

/// One page: the shell filled in, then its own body (`web/pages/`).
struct Page {
    /// Its name: the body's `page-<name>` class, its title's i18n key
    /// `<name>.title`, and its script `js/<name>.js`.
    name: &'static str,
    /// Its title before the i18n script replaces it.
    title: &'static str,
    /// Added to the viewport's content.
    viewport: &'static str,
    /// Head lines of its own.
    head: &'static str,
    /// The rest of its body.
    body: &'static str,
}

impl Page {
    /// A page with the shell's own viewport and no head lines of its own.
    const fn plain(name: &'static str, title: &'static str, body: &'static str) -> Self {
        Self {
            name,
            title,
            viewport: "",
            head: "",
            body,
        }
    }

    fn render(&self) -> String {
        SHELL
            .replace("{{viewport}}", self.viewport)
            .replace("{{head}}", self.head)
            .replace("{{title}}", self.title)
            .replace("{{page}}", self.name)
            + self.body
    }
}

macro_rules! page_body {
    ($name:literal) => {
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/web/pages/",
            $name,
            ".html"
        ))
    };
}

const CONTROL: Page = Page::plain("control", "Control room", page_body!("control"));

const TEAM: Page = Page {
    // A phone in a vehicle: the page reaches under a notch, and the
    // browser's own bars take the page's colour.
    viewport: ", viewport-fit=cover",
    head: "  <meta name=\"theme-color\" content=\"#0b1220\">\n",
    ..Page::plain("team", "Team", page_body!("team"))
};

const SIM: Page = Page::plain("sim", "Student simulator", page_body!("sim"));

static CONTROL_HTML: LazyLock<String> = LazyLock::new(|| CONTROL.render());
static TEAM_HTML: LazyLock<String> = LazyLock::new(|| TEAM.render());
static SIM_HTML: LazyLock<String> = LazyLock::new(|| SIM.render());

/// Where map tiles come from, if anywhere.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TileConfig {
    /// A `{z}/{x}/{y}` URL template (http or https), or `None` for no tiles.
    pub url: Option<String>,
    /// The credit line shown on the map.
    pub attribution: String,
}

impl TileConfig {
    /// Reads `SOSVAULT_SERVER_TILE_URL` and `SOSVAULT_SERVER_TILE_ATTRIBUTION`
    /// through `get`. A URL that is not an http(s) `{z}/{x}/{y}` template is
    /// ignored (with a warning): the map then works without tiles.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Self {
        let url = get("SOSVAULT_SERVER_TILE_URL").filter(|u| !u.trim().is_empty());
        let url = match url {
            Some(u) if tile_origin(&u).is_some() => Some(u.trim().to_owned()),
            Some(_) => {
                tracing::warn!(
                    "SOSVAULT_SERVER_TILE_URL is not an http(s) URL with {{z}}, {{x}} and {{y}}; the map runs without tiles"
                );
                None
            }
            None => None,
        };
        let attribution = get("SOSVAULT_SERVER_TILE_ATTRIBUTION").unwrap_or_else(|| {
            if url.is_some() {
                "© OpenStreetMap contributors".to_owned()
            } else {
                String::new()
            }
        });
        Self { url, attribution }
    }

    /// The page's configuration script.
    fn script(&self) -> String {
        let cfg = serde_json::json!({
            "tileUrl": self.url,
            "tileAttribution": self.attribution,
        });
        format!("window.SOSVAULT_CONFIG = {cfg};\n")
    }

    /// The Content-Security-Policy of every page: only this origin, plus the
    /// tile server's origin for images when one is configured.
    fn csp(&self) -> String {
        let tiles = self
            .url
            .as_deref()
            .and_then(tile_origin)
            .map(|o| format!(" {o}"))
            .unwrap_or_default();
        format!(
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
             img-src 'self' data:{tiles}; connect-src 'self'; font-src 'self'; \
             object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
        )
    }
}

/// `scheme://host[:port]` of a tile URL template, if it is one.
fn tile_origin(url: &str) -> Option<String> {
    let url = url.trim();
    let rest = url
        .strip_prefix("https://")
        .map(|r| ("https", r))
        .or_else(|| url.strip_prefix("http://").map(|r| ("http", r)))?;
    if !(url.contains("{z}") && url.contains("{x}") && url.contains("{y}")) {
        return None;
    }
    let host = rest.1.split('/').next()?;
    let ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '{' | '}'));
    ok.then(|| format!("{}://{}", rest.0, host.replace("{s}", "*")))
}

fn page(body: &'static str, csp: &str) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(HTML));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    security_headers(h);
    r
}

fn security_headers(h: &mut axum::http::HeaderMap) {
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

fn asset(path: &str) -> Response {
    match ASSETS.iter().find(|a| a.path == path) {
        Some(a) => {
            let mut r = (StatusCode::OK, a.body).into_response();
            let h = r.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(a.mime));
            // The files change only with the binary: revalidate, never stale.
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            security_headers(h);
            r
        }
        None => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}

fn config_script(tiles: &TileConfig) -> Response {
    let mut r = (StatusCode::OK, tiles.script()).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(JS));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    security_headers(h);
    r
}

/// The shared part: `/assets/*` and `/assets/config.js`.
fn assets_router<S: Clone + Send + Sync + 'static>(tiles: TileConfig) -> Router<S> {
    Router::new()
        .route(
            "/assets/config.js",
            get(move || {
                let tiles = tiles.clone();
                async move { config_script(&tiles) }
            }),
        )
        .route(
            "/assets/{*path}",
            get(|axum::extract::Path(p): axum::extract::Path<String>| async move { asset(&p) }),
        )
}

/// The control room (`/`) and the team screen (`/team`), with their assets.
/// Tiles are configured from the environment (see [`TileConfig::from_env`]).
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    router_with(TileConfig::from_env(|k| std::env::var(k).ok()))
}

/// [`router`] with an explicit tile configuration.
pub fn router_with<S: Clone + Send + Sync + 'static>(tiles: TileConfig) -> Router<S> {
    let csp = tiles.csp();
    let csp2 = csp.clone();
    Router::new()
        .route("/", get(move || async move { page(&CONTROL_HTML, &csp) }))
        .route("/team", get(move || async move { page(&TEAM_HTML, &csp2) }))
        .route("/favicon.ico", get(|| async { asset("img/favicon.svg") }))
        .merge(assets_router(tiles))
}

/// The student simulator's page (`/`) and the assets it shares with the
/// other pages. Only `sosvault demo` serves it, on its own loopback listener,
/// next to the demo-only endpoints that hold the simulated devices' keys.
pub fn simulator_router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let tiles = TileConfig::from_env(|k| std::env::var(k).ok());
    let csp = tiles.csp();
    Router::new()
        .route("/", get(move || async move { page(&SIM_HTML, &csp) }))
        .route("/favicon.ico", get(|| async { asset("img/favicon.svg") }))
        .merge(assets_router(tiles))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::{
        ASSETS, CONTROL_HTML, HTML, SIM_HTML, StatusCode, TEAM_HTML, TileConfig, asset, header,
        page,
    };

    #[test]
    fn tile_url_must_be_an_http_template() {
        let cfg = |u: &str| {
            let u = u.to_owned();
            TileConfig::from_env(move |k| (k == "SOSVAULT_SERVER_TILE_URL").then(|| u.clone()))
        };
        let osm = cfg("https://tile.openstreetmap.org/{z}/{x}/{y}.png");
        assert_eq!(
            osm.url.as_deref(),
            Some("https://tile.openstreetmap.org/{z}/{x}/{y}.png")
        );
        assert!(
            osm.csp()
                .contains("img-src 'self' data: https://tile.openstreetmap.org;")
        );
        assert!(osm.attribution.contains("OpenStreetMap"));
        assert_eq!(cfg("javascript:alert(1)//{z}{x}{y}").url, None);
        assert_eq!(cfg("https://tiles.example/no-template.png").url, None);
        assert_eq!(
            cfg("https://evil.example\"; script-src *;/{z}/{x}/{y}").url,
            None
        );
        let none = TileConfig::from_env(|_| None);
        assert_eq!(none.url, None);
        assert!(none.csp().contains("img-src 'self' data:;"));
        assert!(none.script().contains("\"tileUrl\":null"));
    }

    #[test]
    fn every_page_is_the_shell_filled_in_then_its_own_body() {
        for (name, html) in [
            ("control", &*CONTROL_HTML),
            ("team", &*TEAM_HTML),
            ("sim", &*SIM_HTML),
        ] {
            assert!(!html.contains("{{"), "{name}: a placeholder left");
            assert!(html.starts_with("<!doctype html>"), "{name}");
            assert!(html.trim_end().ends_with("</html>"), "{name}");
            let once = |needle: &str| {
                assert_eq!(html.matches(needle).count(), 1, "{name}: {needle}");
            };
            once(&format!(
                "<script src=\"/assets/js/{name}.js\" defer></script>"
            ));
            once(&format!(
                "<body class=\"page-{name}\" data-title-key=\"{name}.title\">"
            ));
            once("<head>");
            once("</head>");
            once("id=\"sv-status\"");
            once("id=\"sv-alert\"");
            once("<script src=\"/assets/i18n/hi.js\"></script>");
        }
        assert!(TEAM_HTML.contains("viewport-fit=cover") && TEAM_HTML.contains("theme-color"));
        assert!(!CONTROL_HTML.contains("theme-color"));
    }

    #[test]
    fn pages_carry_a_strict_csp_and_are_never_cached() {
        let csp = TileConfig::default().csp();
        for body in [&*CONTROL_HTML, &*TEAM_HTML, &*SIM_HTML] {
            let r = page(body, &csp);
            let h = r.headers();
            assert_eq!(h[header::CONTENT_TYPE], HTML);
            assert_eq!(h[header::CACHE_CONTROL], "no-store");
            assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            let c = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
            assert!(c.contains("script-src 'self';") && c.contains("connect-src 'self';"));
            assert!(
                !c.contains("http"),
                "no outside origin without a tile URL: {c}"
            );
            // No inline script: everything the pages run is a file under /assets/.
            let text: &str = body;
            for chunk in text.split("<script").skip(1) {
                assert!(
                    chunk.trim_start().starts_with("src=\"/assets/"),
                    "inline script in a page"
                );
            }
        }
    }

    #[test]
    fn every_asset_is_embedded_and_typed() {
        for a in ASSETS {
            assert!(!a.body.is_empty(), "{} is empty", a.path);
            assert!(!a.mime.is_empty());
        }
        assert!(asset("vendor/leaflet/leaflet.js").status().is_success());
        assert_eq!(asset("../Cargo.toml").status(), StatusCode::NOT_FOUND);
    }
}

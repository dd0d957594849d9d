//! The meeting page (`GET /` and `GET /demo/…`): a small HTML page, its
//! script and style, and the built TypeScript client (`clients/js/dist`),
//! all embedded in the binary so that nothing is fetched from elsewhere.
//! Served only when `http.demo_page` is on (by default in dev mode). Every
//! answer carries a Content-Security-Policy that allows only this origin,
//! so the page runs no inline script and loads nothing from a CDN.

/// One embedded file of the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asset {
    Index,
    App,
    Style,
    Client,
}

/// Only this origin: scripts, styles and WebSocket connections to the
/// server itself; camera and microphone streams stay local (`blob:`,
/// `mediastream:`); no plugins, no framing by other sites.
const CSP: &str = "Content-Security-Policy: default-src 'self'; script-src 'self'; style-src 'self'; \
connect-src 'self'; img-src 'self' data:; media-src 'self' blob: mediastream:; object-src 'none'; \
base-uri 'none'; form-action 'self'; frame-ancestors 'none'\r\n\
X-Content-Type-Options: nosniff\r\nCache-Control: no-cache\r\nReferrer-Policy: no-referrer\r\n";

impl Asset {
    /// The asset a path names, if any.
    pub fn from_path(path: &str) -> Option<Asset> {
        match path {
            "/" | "/index.html" => Some(Asset::Index),
            "/demo/app.js" => Some(Asset::App),
            "/demo/style.css" => Some(Asset::Style),
            "/demo/roomcast.js" => Some(Asset::Client),
            _ => None,
        }
    }

    fn content(self) -> (&'static str, &'static [u8]) {
        match self {
            Asset::Index => ("text/html; charset=utf-8", include_bytes!("../demo/index.html")),
            Asset::App => ("text/javascript; charset=utf-8", include_bytes!("../demo/app.js")),
            Asset::Style => ("text/css; charset=utf-8", include_bytes!("../demo/style.css")),
            Asset::Client => ("text/javascript; charset=utf-8", include_bytes!("../../clients/js/dist/roomcast.js")),
        }
    }

    /// The complete response.
    pub fn response(self) -> Vec<u8> {
        let (content_type, body) = self.content();
        crate::http::response(200, content_type, CSP, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_its_type_and_the_policy() {
        for (path, kind) in [
            ("/", "text/html"),
            ("/demo/app.js", "text/javascript"),
            ("/demo/style.css", "text/css"),
            ("/demo/roomcast.js", "text/javascript"),
        ] {
            let asset = Asset::from_path(path).unwrap_or_else(|| panic!("{path} is an asset"));
            let response = String::from_utf8_lossy(&asset.response()).into_owned();
            assert!(response.contains(&format!("Content-Type: {kind}")), "{path}: {response}");
            assert!(response.contains("Content-Security-Policy: default-src 'self';"), "{path}");
            assert!(!response.contains("http://") && !response.contains("https://"), "{path} loads from elsewhere");
        }
        assert_eq!(Asset::from_path("/demo/../Cargo.toml"), None);
    }
}

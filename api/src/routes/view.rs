//! The shipped Grafana dashboards as pages of their own, for people
//! without Grafana (and for the tests, which open them in headless
//! Chromium): `/dashboards` lists them, `/dashboards/{uid}` draws one from
//! the same queries to this API. The page is static (no data in it); its
//! script asks for a token and sends it with every query.

use axum::extract::Path;
use axum::response::{Html, IntoResponse, Redirect, Response};

use crate::ApiError;

const PAGE: &str = include_str!("../view/dashboard.html");

/// The dashboards, as provisioned to Grafana (`dashboards/*.json`).
const DASHBOARDS: &[&str] = &[
    include_str!("../../../dashboards/energy-overview.json"),
    include_str!("../../../dashboards/savings.json"),
    include_str!("../../../dashboards/lifts.json"),
    include_str!("../../../dashboards/maintenance.json"),
    include_str!("../../../dashboards/access-gates.json"),
    include_str!("../../../dashboards/alerts.json"),
    include_str!("../../../dashboards/pipeline-health.json"),
];

fn parsed() -> impl Iterator<Item = serde_json::Value> {
    DASHBOARDS
        .iter()
        .map(|d| serde_json::from_str(d).expect("a shipped dashboard is JSON"))
}

/// `[{uid, title}]` of every dashboard, for the page's navigation.
fn index() -> String {
    let list: Vec<serde_json::Value> = parsed()
        .map(|d| serde_json::json!({"uid": d["uid"], "title": d["title"]}))
        .collect();
    serde_json::to_string(&list).expect("json")
}

/// JSON inside a `<script>` element: `</` may not appear.
fn embed(json: &str) -> String {
    json.replace("</", "<\\/")
}

/// The first dashboard.
pub async fn list() -> Redirect {
    let first = parsed().next().expect("dashboards ship");
    Redirect::to(&format!(
        "/dashboards/{}",
        first["uid"].as_str().unwrap_or("")
    ))
}

/// One dashboard's page.
pub async fn page(Path(uid): Path<String>) -> Response {
    let Some(d) = DASHBOARDS
        .iter()
        .zip(parsed())
        .find(|(_, d)| d["uid"] == uid.as_str())
        .map(|(text, _)| text)
    else {
        return ApiError::NotFound(format!("no dashboard `{uid}`; /dashboards lists them"))
            .into_response();
    };
    (
        [(axum::http::header::CONTENT_SECURITY_POLICY, POLICY.as_str())],
        Html(
            PAGE.replace("__DASHBOARD__", &embed(d))
                .replace("__INDEX__", &embed(&index())),
        ),
    )
        .into_response()
}

/// The page's Content-Security-Policy: its own script (by hash) and
/// queries to this API, nothing else.
static POLICY: std::sync::LazyLock<String> = std::sync::LazyLock::new(policy);

fn policy() -> String {
    use base64::Engine;
    use sha2::{Digest, Sha256};
    let start = PAGE.rfind("<script>").expect("the page has its script") + "<script>".len();
    let end = start + PAGE[start..].find("</script>").expect("closed");
    let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&PAGE[start..end]));
    format!(
        "default-src 'none'; script-src 'sha256-{hash}'; style-src 'unsafe-inline'; \
         connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_dashboard_is_served() {
        let on_disk = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../dashboards"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "json")
            })
            .count();
        assert_eq!(
            on_disk,
            DASHBOARDS.len(),
            "a dashboard file is not listed here"
        );
        let index: serde_json::Value = serde_json::from_str(&index()).unwrap();
        assert_eq!(index.as_array().unwrap().len(), DASHBOARDS.len());
        assert_eq!(embed("{\"a\":\"</script>\"}"), "{\"a\":\"<\\/script>\"}");
        assert!(POLICY.contains("script-src 'sha256-"), "{}", *POLICY);
    }
}

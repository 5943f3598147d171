//! The API against its own OpenAPI document, checked by tools we did not
//! write: the served document must pass `openapi-spec-validator` (PyPI),
//! and `schemathesis` (PyPI) must find no server error, no undocumented
//! status code, content type or header, and no response that breaks its
//! schema, over every operation, on a database holding two days of the
//! simulated site. `scripts/test.sh` installs both tools (the README's test
//! command); without them this test fails and says so.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

/// The Python with openapi-spec-validator and schemathesis.
fn python() -> std::path::PathBuf {
    let path = std::env::var_os("ESTATEMON_TEST_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/var/tmp/estatemon-test-venv/bin/python".into());
    let ok = Command::new(&path)
        .args(["-c", "import openapi_spec_validator, schemathesis"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{} lacks openapi-spec-validator / schemathesis: run the tests with scripts/test.sh \
         (README, Tests), which installs them",
        path.display()
    );
    path
}

/// Validates the document and checks what a validator does not: every
/// `in: path` parameter is in its path template, every operation but
/// health documents 401, every error response is the JSON error body.
const VALIDATE: &str = r#"
import json, sys, urllib.request
from openapi_spec_validator import validate
doc = json.load(urllib.request.urlopen(sys.argv[1]))
validate(doc)
problems, ops = [], 0
for path, item in doc["paths"].items():
    for method, op in item.items():
        if method not in ("get", "put", "post", "delete", "patch"):
            continue
        ops += 1
        for p in op.get("parameters", []):
            if p["in"] == "path" and "{" + p["name"] + "}" not in path:
                problems.append(f"{method} {path}: `{p['name']}` is in: path but not in the path")
        if path != "/api/v1/health" and "401" not in op["responses"]:
            problems.append(f"{method} {path}: 401 undocumented")
        for code, r in op["responses"].items():
            if code.startswith(("4", "5")) and path != "/api/v1/health":
                schema = json.dumps(r.get("content", {}))
                if "ErrorBody" not in schema:
                    problems.append(f"{method} {path}: {code} is not the JSON error body")
if problems:
    print("\n".join(problems))
    sys.exit(1)
print(f"valid OpenAPI {doc['openapi']}: {ops} operations")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_openapi_document_validates_and_the_api_keeps_to_it() {
    let python = python();
    let db = TestDb::new(&admin_url());
    let truth = std::env::temp_dir().join(format!("{}.json", unique("truth")));
    run(estatemon(&db)
        .args(["simulate", "backfill", "--direct", "--from"])
        .args([
            "2026-06-01T00:00:00+08:00",
            "--to",
            "2026-06-03T00:00:00+08:00",
            "--interval-s",
            "900",
            "--truth",
        ])
        .arg(&truth));
    let _ = std::fs::remove_file(&truth);
    let token =
        run(estatemon(&db).args(["token", "create", "--name", "contract", "--role", "admin"]));
    let token = token
        .lines()
        .find(|l| l.starts_with("emt_"))
        .expect("token printed")
        .to_owned();
    let port = free_port();
    let mut api = tokio::process::Command::from(estatemon(&db));
    api.arg("api")
        .env("ESTATEMON_API_LISTEN", format!("127.0.0.1:{port}"))
        .kill_on_drop(true);
    let _api = api.spawn().unwrap();
    let addr = format!("127.0.0.1:{port}");
    let up = eventually(Duration::from_secs(30), || {
        let addr = addr.clone();
        async move {
            tokio::net::TcpStream::connect(&addr).await.is_ok()
                && http_get(&addr, "/api/v1/health").await.contains("200 OK")
        }
    })
    .await;
    assert!(up, "the API did not start");
    let document = format!("http://{addr}/api/v1/openapi.json");

    let out = tokio::task::block_in_place(|| {
        Command::new(&python)
            .args(["-c", VALIDATE, &document])
            .output()
            .unwrap()
    });
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    println!("{text}");
    assert!(out.status.success(), "the document is invalid:\n{text}");

    // schemathesis: a bounded run in CI (examples per operation), a longer
    // one by hand with ESTATEMON_SCHEMATHESIS_EXAMPLES.
    let examples = std::env::var("ESTATEMON_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "12".into());
    let st = python.with_file_name("st");
    let out = tokio::task::block_in_place(|| {
        Command::new(&st)
            .args(["run", &document])
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,\
                 response_headers_conformance,response_schema_conformance",
                "--max-examples",
                &examples,
                "--seed",
                "16",
                // One worker: with two threads, Hypothesis' ast.parse on
                // CPython 3.11.7 (this machine's) can fail with "AST
                // constructor recursion depth mismatch" (CPython
                // gh-106905), an error of the tool, not of the API.
                "--workers",
                "1",
                "--request-timeout",
                "30",
                "--no-color",
                "--generation-database",
                "none",
                // A rules file and a roster are TOML, which schemathesis
                // cannot generate; tests/api/ and tests/oncall.rs put good,
                // bad and empty ones.
                "--exclude-operation-id",
                "put_rules",
                "--exclude-operation-id",
                "put_roster",
                "--header",
                &format!("Authorization: Bearer {token}"),
            ])
            .output()
            .unwrap()
    });
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    println!("{text}");
    assert!(
        out.status.success(),
        "schemathesis found the API and its document disagree:\n{text}"
    );
}

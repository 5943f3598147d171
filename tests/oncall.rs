//! On-call end to end: an emergency's ladder on a simulated clock, its
//! pages on each person's contact methods (a local receiver in each
//! channel's documented shape, and a real SMTP server: aiosmtpd from
//! PyPI), fall-through when every method fails, a hand-over in the middle
//! of the escalation, and the signed single-use links served by
//! `estatemon api`: used, replayed, altered, expired, looked at on a
//! phone-sized headless Chromium.

mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use common::*;
use estatemon_analytics::oncall::{deliver, links, plan, roster::Roster};

/// What the HTTP receiver got: (path, form or JSON body as text).
type Got = Arc<Mutex<Vec<(String, String)>>>;

/// A receiver for every HTTP channel: `/voice` refuses calls to
/// `refuse_call` (HTTP 500, as a gateway that cannot reach the number).
async fn channels(refuse_call: &'static str) -> (String, Got) {
    use axum::body::Bytes;
    use axum::http::{StatusCode, Uri};
    let got: Got = Default::default();
    let app =
        axum::Router::new()
            .fallback(
                move |axum::extract::State(got): axum::extract::State<Got>,
                      uri: Uri,
                      body: Bytes| async move {
                    let text = String::from_utf8_lossy(&body).into_owned();
                    got.lock()
                        .unwrap()
                        .push((uri.path().to_owned(), text.clone()));
                    let refused = uri.path() == "/voice"
                        && url::form_urlencoded::parse(text.as_bytes())
                            .any(|(k, v)| k == "To" && v == refuse_call);
                    if refused {
                        (
                            StatusCode::INTERNAL_SERVER_ERROR,
                            r#"{"code":21217,"message":"unreachable"}"#,
                        )
                    } else {
                        (StatusCode::OK, r#"{"errcode":0,"ok":true}"#)
                    }
                },
            )
            .with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, got)
}

/// aiosmtpd (PyPI) on a free port: accepts mail to any address but
/// `nobody@…` (550), and writes each message to `log` as a JSON line.
struct Smtp {
    child: std::process::Child,
    port: u16,
    log: std::path::PathBuf,
}

impl Smtp {
    fn start() -> Smtp {
        let python = std::env::var_os("ESTATEMON_TEST_PYTHON")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| "/var/tmp/estatemon-test-venv/bin/python".into());
        let port = free_port();
        let log = std::env::temp_dir().join(format!("{}.jsonl", unique("smtp")));
        let script = r#"
import json, sys, time
from aiosmtpd.controller import Controller
class Handler:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith('nobody@'):
            return '550 5.1.1 no such mailbox'
        envelope.rcpt_tos.append(address)
        return '250 OK'
    async def handle_DATA(self, server, session, envelope):
        with open(sys.argv[2], 'a') as f:
            f.write(json.dumps({'from': envelope.mail_from, 'to': envelope.rcpt_tos,
                                'data': envelope.content.decode('utf8', 'replace')}) + '\n')
        return '250 Message accepted for delivery'
c = Controller(Handler(), hostname='127.0.0.1', port=int(sys.argv[1]))
c.start()
print('ready', flush=True)
while True:
    time.sleep(3600)
"#;
        let mut child = Command::new(python)
            .args(["-c", script, &port.to_string(), log.to_str().unwrap()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("aiosmtpd (scripts/test.sh installs it)");
        let mut line = String::new();
        use std::io::BufRead;
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "aiosmtpd did not start");
        Smtp { child, port, log }
    }

    fn messages(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const ROSTER: &str = r#"
[[person]]
id = "chan-tai-man"
name = "陳大文"
language = "zh"
contacts = { phone = "+85255550101", wecom = "chantaiman" }

[[person]]
id = "wong-siu-ming"
name = "Wong Siu Ming"
contacts = { telegram = "700100200" }

[[person]]
id = "manager"
name = "Engineering manager"
contacts = { email = "nobody@estate.example" }

[[person]]
id = "control-room"
name = "Control room"
contacts = { phone = "+85255550199", email = "control@estate.example" }

[[team]]
id = "hv-lifts"
site = "harbour-view"
trade = "lifts"
time_zone = "Asia/Hong_Kong"

[[team.layer]]
name = "daily"
members = ["chan-tai-man", "wong-siu-ming"]
start = 2026-12-07T08:00:00
every = "1d"

[[policy]]
id = "hv-lift-emergencies"
severities = ["emergency"]
site = "harbour-view"
kinds = ["lift"]
fallback = "control-room"
repeat_every = "15m"

[[policy.step]]
after = "0m"
notify = "team:hv-lifts"

[[policy.step]]
after = "5m"
notify = "person:manager"
"#;

/// One control room, always on duty, paged by SMS for emergencies and
/// ordinary alerts at the site.
const DESK_ROSTER: &str = r#"
[[person]]
id = "desk"
name = "Control room"
contacts = { phone = "+85255550199" }
[[team]]
id = "hv-desk"
site = "harbour-view"
trade = "security"
time_zone = "Asia/Hong_Kong"
[[team.layer]]
name = "always"
members = ["desk"]
start = 2026-01-05T08:00:00
every = "1w"
[[policy]]
id = "everything"
severities = ["emergency", "ordinary"]
site = "harbour-view"
fallback = "desk"
repeat = 1
[[policy.step]]
after = "0m"
notify = "team:hv-desk"
"#;

fn hk(local: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(&format!("{local}+08:00"))
        .unwrap()
        .with_timezone(&Utc)
}

/// Sends what is due until nothing is (retries wait their backoff).
async fn drain(client: &mut tokio_postgres::Client, pager: &deliver::Pager) {
    for _ in 0..200 {
        deliver::deliver_due(client, pager).await.unwrap();
        let waiting: i64 = client
            .query_one(
                "SELECT count(*) FROM oncall_pages
                  WHERE delivered_at IS NULL AND failed_at IS NULL AND cancelled_at IS NULL",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting == 0 {
            return;
        }
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    }
    panic!("pages still waiting after 20 s");
}

async fn events(client: &tokio_postgres::Client, alert: i64) -> Vec<(String, String, String)> {
    client
        .query(
            "SELECT kind, coalesce(person, ''), coalesce(channel, '') FROM oncall_events
              WHERE alert_id = $1 ORDER BY id",
            &[&alert],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entrapment_escalates_falls_through_hands_over_and_stops_at_a_link() {
    let db = TestDb::new(&admin_url());
    let mut config = estatemon_domain::config::Config::default();
    config.database.url = db.url.clone();
    let (_client, _) = estatemon_domain::schema::prepare(&config.database, &config.storage)
        .await
        .unwrap();
    let (base, got) = channels("+85255550101").await;
    let smtp = Smtp::start();
    let roster_path = std::env::temp_dir().join(format!("{}.toml", unique("roster")));
    std::fs::write(&roster_path, ROSTER).unwrap();
    let channel = |name: &str, format: &str, extra: &str| {
        toml::from_str::<estatemon_domain::config::WebhookConfig>(&format!(
            "name = \"{name}\"\nurl = \"{base}/{name}\"\nformat = \"{format}\"\n{extra}"
        ))
        .unwrap()
    };
    config.oncall.roster = Some(roster_path.clone());
    config.oncall.tries_per_method = 2;
    config.oncall.channels = vec![
        channel("voice", "voice", "account = \"AC1\"\nsecret = \"tok\"\nfrom = \"+85230000000\""),
        channel("sms", "sms", "account = \"AC1\"\nsecret = \"tok\"\nfrom = \"+85230000000\""),
        channel("wecom", "wecom", ""),
        channel("telegram", "telegram", ""),
        toml::from_str(&format!(
            "name = \"mail\"\nurl = \"smtp://127.0.0.1:{}\"\nformat = \"email\"\nfrom = \"estatemon@estate.example\"",
            smtp.port
        ))
        .unwrap(),
    ];
    // The API, for the links.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = listener.local_addr().unwrap();
    config.oncall.public_url = Some(format!("http://{api}"));
    config.api.audit_flush_ms = 20;
    config.validate(None, None).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(estatemon_api::serve_on(listener, config.clone(), async {
        let _ = stopped.await;
    }));
    let roster = Roster::load(&roster_path).unwrap();
    let pager = deliver::Pager::new(&config, Arc::new(roster.clone()));
    let mut client = db.client().await;
    client
        .batch_execute(
            "INSERT INTO devices (device_id, kind, site_id, building_id)
             VALUES ('hv-a-lift-1', 'lift', 'harbour-view', 'tower-a')",
        )
        .await
        .unwrap();
    // Trapped at 07:50, ten minutes before the lift team's hand-over
    // from 陳大文 (days from Monday 08:00) to Wong.
    let fired = hk("2026-12-08T07:50:00");
    let alert: i64 = client
        .query_one(
            "INSERT INTO alerts (rule, subject, fingerprint, severity, summary, labels, site_id,
                                 device_id, source, started_at, last_seen_at, fired_at, response_deadline)
             VALUES ('lift_entrapment', 'hv-a-lift-1', 'e1', 'emergency', 'Passenger trapped',
                     '{\"site\":\"harbour-view\",\"building\":\"tower-a\",\"device\":\"hv-a-lift-1\"}',
                     'harbour-view', 'hv-a-lift-1', 'ingest', $1, $1, $1, $1::timestamptz + interval '15 minutes')
             RETURNING id",
            &[&fired],
        )
        .await
        .unwrap()
        .get(0);

    // 07:50: step 1 pages 陳大文: the call fails twice, the SMS goes.
    let p = plan::plan(&client, &roster, fired).await.unwrap();
    assert_eq!((p.paged, p.flagged), (1, 0));
    assert_eq!(
        plan::plan(&client, &roster, fired).await.unwrap().paged,
        0,
        "once per step"
    );
    drain(&mut client, &pager).await;
    let sent: Vec<(String, String)> = got.lock().unwrap().clone();
    let paths: Vec<&str> = sent.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        ["/voice", "/voice", "/sms"],
        "a call, retried, then SMS"
    );
    let form: HashMap<String, String> = url::form_urlencoded::parse(sent[2].1.as_bytes())
        .into_owned()
        .collect();
    assert_eq!(form["To"], "+85255550101");
    let body = &form["Body"];
    assert!(
        body.starts_with("【緊急】Passenger trapped — harbour-view / tower-a / hv-a-lift-1"),
        "{body}"
    );
    assert!(
        body.contains("08:05") && body.contains("Asia/Hong_Kong"),
        "local deadline: {body}"
    );
    assert!(
        body.contains("確認：http://") && body.contains("(ref P1)"),
        "{body}"
    );
    let twiml: HashMap<String, String> = url::form_urlencoded::parse(sent[0].1.as_bytes())
        .into_owned()
        .collect();
    assert!(
        twiml["Twiml"].contains(r#"<Say language="zh-HK">【緊急】"#),
        "{}",
        twiml["Twiml"]
    );
    assert!(!twiml["Twiml"].contains("http"), "links are not read aloud");
    assert_eq!(
        events(&client, alert).await,
        [
            ("failed".into(), "chan-tai-man".into(), "voice".into()),
            ("failed".into(), "chan-tai-man".into(), "voice".into()),
            ("sent".into(), "chan-tai-man".into(), "sms".into()),
        ]
    );

    // 07:55: step 2, the manager, by e-mail; the mailbox refuses (550):
    // every method failed, so the fallback (the control room) is paged now.
    got.lock().unwrap().clear();
    assert_eq!(
        plan::plan(&client, &roster, fired + Duration::minutes(5))
            .await
            .unwrap()
            .paged,
        1
    );
    drain(&mut client, &pager).await;
    let e = events(&client, alert).await;
    assert_eq!(e[3], ("failed".into(), "manager".into(), "mail".into()));
    assert!(
        e.contains(&("fell_through".into(), "control-room".into(), "".into())),
        "{e:?}"
    );
    assert!(
        e.contains(&("sent".into(), "control-room".into(), "voice".into())),
        "{e:?}"
    );
    let call: HashMap<String, String> =
        url::form_urlencoded::parse(got.lock().unwrap()[0].1.as_bytes())
            .into_owned()
            .collect();
    assert_eq!(call["To"], "+85255550199");
    assert!(call["Twiml"].contains(r#"<Say language="en-GB">[EMERGENCY] Passenger trapped"#));
    assert!(
        smtp.messages().is_empty(),
        "the refused mail was not delivered"
    );

    // 08:05: the ladder's second round; the lift team handed over at 08:00,
    // so step 1 now pages Wong, on Telegram, with the links as buttons.
    got.lock().unwrap().clear();
    let p = plan::plan(&client, &roster, fired + Duration::minutes(15))
        .await
        .unwrap();
    assert_eq!((p.paged, p.handovers), (1, 1));
    drain(&mut client, &pager).await;
    let (path, body) = got.lock().unwrap()[0].clone();
    assert_eq!(path, "/telegram");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["chat_id"], "700100200");
    let buttons = body["reply_markup"]["inline_keyboard"][0]
        .as_array()
        .unwrap();
    assert_eq!(buttons.len(), 3);
    let ack = buttons[0]["url"].as_str().unwrap().to_owned();
    let snooze = buttons[2]["url"].as_str().unwrap().to_owned();
    assert!(ack.starts_with(&format!("http://{api}/oncall/a/")), "{ack}");

    // The link page on a phone: Chromium at 390×844.
    let shot = std::env::temp_dir().join(format!("{}.png", unique("ack-page")));
    let profile = std::env::temp_dir().join(unique("chromium"));
    let out = headless_chromium(chromium(), &profile)
        .args(["--window-size=390,844", "--hide-scrollbars"])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&ack)
        .output()
        .unwrap();
    assert!(shot.exists(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        count_colour(&shot, (0x15, 0x65, 0xc0)) > 2000,
        "the blue button is drawn"
    );
    let keep = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("oncall-ack-page.png");
    let _ = std::fs::copy(&shot, &keep);

    // Opening the link acts on nothing; pressing the button acknowledges,
    // once.
    let http = reqwest::Client::new();
    let r = http.get(&ack).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    assert!(
        page.contains("Acknowledge") && page.contains("Wong Siu Ming"),
        "{page}"
    );
    let state: String = client
        .query_one("SELECT state FROM alerts WHERE id = $1", &[&alert])
        .await
        .unwrap()
        .get(0);
    assert_eq!(state, "firing", "a GET (a chat app's preview) does nothing");
    let r = http.post(&ack).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("Acknowledged"));
    let by: String = client
        .query_one(
            "SELECT acknowledged_by FROM alerts WHERE id = $1",
            &[&alert],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(by, "Wong Siu Ming (link in page P4)");
    // Replayed, altered, expired: refused with a page that says why.
    let r = http.post(&ack).send().await.unwrap();
    assert_eq!(r.status(), 410);
    assert!(r.text().await.unwrap().contains("each link works once"));
    let altered = ack.replacen("/oncall/a/4.", "/oncall/a/1.", 1);
    let r = http.post(&altered).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(r.text().await.unwrap().contains("altered"));
    let key = links::key(&client).await.unwrap();
    let expired = links::urls(
        &key,
        &format!("http://{api}"),
        4,
        Utc::now() - Duration::minutes(1),
    );
    let r = http.post(&expired.resolve).send().await.unwrap();
    assert_eq!(r.status(), 410);
    assert!(r.text().await.unwrap().contains("expired"));
    // Snoozing an acknowledged alert is a use of its own link, said so.
    let r = http.post(&snooze).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // Acknowledged: the ladder stops.
    for minutes in [20, 30, 45, 60] {
        let p = plan::plan(&client, &roster, fired + Duration::minutes(minutes))
            .await
            .unwrap();
        assert_eq!(p.paged, 0, "after the acknowledgement, at +{minutes} min");
    }

    // The audit names the person the link was sent to and keeps no
    // signature; the timeline has it all.
    assert!(
        eventually(StdDuration::from_secs(5), || async {
            db.count(
                "SELECT count(*) FROM audit_log WHERE actor = 'link:wong-siu-ming'
                  AND path LIKE '/oncall/a/4.ack.%.***'",
            )
            .await
                >= 3
        })
        .await,
        "audited with the person, without the signature"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM audit_log WHERE status = 403 AND detail LIKE '%altered%'")
            .await,
        1
    );
    let token =
        estatemon_api::create_token(&client, "viewer", estatemon_api::auth::Role::Viewer, "test")
            .await
            .unwrap();
    let timeline: serde_json::Value = http
        .get(format!("http://{api}/api/v1/alerts/{alert}/timeline"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kinds: Vec<&str> = timeline
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    for k in [
        "fired",
        "paged",
        "failed",
        "sent",
        "fell_through",
        "handover",
        "acknowledged",
        "snoozed",
    ] {
        assert!(kinds.contains(&k), "{k} in {kinds:?}");
    }
    // (The ladder ran on a simulated clock, two days ahead of the tries.)
    let paged: Vec<&serde_json::Value> = timeline
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "paged")
        .collect();
    assert_eq!(paged.len(), 4);
    let first = paged.iter().find(|e| e["page"] == 1).unwrap();
    assert_eq!(first["at"], "2026-12-07T23:50:00Z");
    assert_eq!(
        (&first["name"], &first["step"]),
        (&serde_json::json!("陳大文"), &serde_json::json!(1))
    );
    let fallback = paged.iter().find(|e| e["page"] == 3).unwrap();
    assert_eq!(fallback["name"], "Control room");
    assert!(fallback["detail"]
        .as_str()
        .unwrap()
        .contains("every contact method of manager failed"));
    let handover = timeline
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "handover")
        .unwrap();
    assert_eq!(handover["name"], "Wong Siu Ming");
    assert!(handover["detail"]
        .as_str()
        .unwrap()
        .contains("chan-tai-man handed over to wong-siu-ming"));
    let text = serde_json::to_string(&timeline).unwrap();
    for personal in ["+85255550101", "700100200", "nobody@estate.example"] {
        assert!(
            !text.contains(personal),
            "no contact detail in the timeline"
        );
    }
    let _ = stop.send(());
    let _ = server.await;
}

/// Two analytics replicas page 300 entrapments; one is SIGKILLed while
/// paging. Every page reaches the receiver, none twice except at most the
/// one the killed replica was sending (it carries the same reference, so
/// the receiver can tell).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_one_killed_never_page_a_step_twice() {
    use axum::http::Uri;
    let db = TestDb::new(&admin_url());
    let got: Got = Default::default();
    let app = axum::Router::new()
        .fallback(
            |axum::extract::State(got): axum::extract::State<Got>, uri: Uri, body: String| async move {
                // A gateway that takes its time: pages are in flight when
                // the replica dies.
                tokio::time::sleep(StdDuration::from_millis(25)).await;
                got.lock().unwrap().push((uri.path().to_owned(), body));
                r#"{"sid":"SM1"}"#
            },
        )
        .with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let roster = std::env::temp_dir().join(format!("{}.toml", unique("roster")));
    std::fs::write(&roster, DESK_ROSTER).unwrap();
    let config = std::env::temp_dir().join(format!("{}.toml", unique("config")));
    std::fs::write(
        &config,
        format!(
            "[alerts]\nevaluate_interval_s = 3600\n[oncall]\nroster = \"{}\"\n\
             [[oncall.channel]]\nname = \"sms\"\nformat = \"sms\"\nurl = \"{base}/sms\"\n\
             account = \"AC1\"\nsecret = \"tok\"\nfrom = \"+85230000000\"\nrate_per_minute = 100000\n",
            roster.display()
        ),
    )
    .unwrap();
    // The schema first: two processes would race to create it.
    let mut c = estatemon_domain::config::Config::default();
    c.database.url = db.url.clone();
    estatemon_domain::schema::prepare(&c.database, &c.storage)
        .await
        .unwrap();
    let ports = [free_port(), free_port()];
    let mut replicas: Vec<tokio::process::Child> = ports
        .iter()
        .map(|p| {
            let mut c = tokio::process::Command::from(estatemon(&db));
            c.arg("--config")
                .arg(&config)
                .arg("analytics")
                .env("ESTATEMON_ALERTS_LISTEN", format!("127.0.0.1:{p}"))
                .kill_on_drop(true);
            c.spawn().unwrap()
        })
        .collect();
    for p in ports {
        assert!(listening(&format!("127.0.0.1:{p}"), StdDuration::from_secs(60)).await);
    }
    // Both have evaluated once (an empty estate); the next evaluation is an
    // hour away, so only the pager acts on these alerts.
    tokio::time::sleep(StdDuration::from_secs(1)).await;
    let client = db.client().await;
    client
        .batch_execute(
            "INSERT INTO alerts (rule, subject, fingerprint, severity, summary, labels, site_id,
                                 source, started_at, last_seen_at, fired_at, response_deadline)
             SELECT 'lift_entrapment', 'lift-' || g, 'f' || g, 'emergency', 'Passenger trapped',
                    jsonb_build_object('site', 'harbour-view', 'device', 'lift-' || g),
                    'harbour-view', 'ingest', now(), now(), now(), now() + interval '15 minutes'
               FROM generate_series(1, 300) g;
             SELECT pg_notify('estatemon_alerts', 'test');",
        )
        .await
        .unwrap();
    assert!(
        eventually(StdDuration::from_secs(30), || async {
            got.lock().unwrap().len() >= 60
        })
        .await,
        "paging began"
    );
    let mut victim = replicas.remove(0);
    victim.kill().await.unwrap(); // SIGKILL
    let done = eventually(StdDuration::from_secs(60), || async {
        db.count("SELECT count(*) FROM oncall_pages WHERE delivered_at IS NOT NULL")
            .await
            >= 300
    })
    .await;
    assert!(done, "every page delivered by the survivor");
    tokio::time::sleep(StdDuration::from_millis(500)).await;
    let mut by_ref: HashMap<String, usize> = HashMap::new();
    for (_, body) in got.lock().unwrap().iter() {
        let form: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect();
        let text = &form["Body"];
        let r = text[text.rfind("(ref P").unwrap()..].to_owned();
        *by_ref.entry(r).or_default() += 1;
    }
    assert_eq!(by_ref.len(), 300, "each alert's step paged");
    let repeats: usize = by_ref.values().map(|n| n - 1).sum();
    assert!(repeats <= 1, "{repeats} pages sent twice");
    assert_eq!(
        db.count("SELECT count(*) FROM oncall_pages").await,
        300,
        "one page per step"
    );
    drop(victim);
}

/// Prometheus alerts (through a real Alertmanager's webhook) and a dead
/// analytics job (SIGKILL: its heartbeat stops) page through the same
/// ladder as estatemon's own alerts; the API process watches the
/// heartbeats and pages, so the dead job's alert still goes out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_alerts_and_a_dead_analytics_job_page_through_the_same_ladder() {
    let db = TestDb::new(&admin_url());
    let mut c = estatemon_domain::config::Config::default();
    c.database.url = db.url.clone();
    let (client, _) = estatemon_domain::schema::prepare(&c.database, &c.storage)
        .await
        .unwrap();
    let token = estatemon_api::create_token(
        &client,
        "alertmanager",
        estatemon_api::auth::Role::Operator,
        "test",
    )
    .await
    .unwrap();
    let (base, got) = channels("none").await;
    let roster = std::env::temp_dir().join(format!("{}.toml", unique("roster")));
    std::fs::write(&roster, DESK_ROSTER).unwrap();
    let api_port = free_port();
    let config = std::env::temp_dir().join(format!("{}.toml", unique("config")));
    std::fs::write(
        &config,
        format!(
            "[alerts]\nevaluate_interval_s = 3600\n[api]\nlisten = \"127.0.0.1:{api_port}\"\n\
             [oncall]\nroster = \"{}\"\n\
             [[oncall.heartbeat]]\nname = \"estatemon-analytics\"\ninterval_s = 6\nseverity = \"emergency\"\n\
             site = \"harbour-view\"\nsummary = \"The estatemon analytics job stopped\"\n\
             [[oncall.channel]]\nname = \"sms\"\nformat = \"sms\"\nurl = \"{base}/sms\"\n\
             account = \"AC1\"\nsecret = \"tok\"\nfrom = \"+85230000000\"\n",
            roster.display()
        ),
    )
    .unwrap();
    let spawn = |what: &str| {
        let mut c = tokio::process::Command::from(estatemon(&db));
        c.arg("--config")
            .arg(&config)
            .arg(what)
            .env(
                "ESTATEMON_ALERTS_LISTEN",
                format!("127.0.0.1:{}", free_port()),
            )
            .kill_on_drop(true);
        c.spawn().unwrap()
    };
    let _api = spawn("api");
    let mut analytics = spawn("analytics");
    assert!(listening(&format!("127.0.0.1:{api_port}"), StdDuration::from_secs(60)).await);
    let sms = |needle: &'static str| {
        let got = got.clone();
        move || {
            let got = got.clone();
            async move {
                got.lock()
                    .unwrap()
                    .iter()
                    .filter(|(_, b)| {
                        url::form_urlencoded::parse(b.as_bytes())
                            .any(|(k, v)| k == "Body" && v.contains(needle))
                    })
                    .count()
            }
        }
    };

    // Alertmanager (Debian's) sends its webhook to the intake, with the
    // operator token as its bearer credentials.
    let am = Alertmanager::with_config(&format!(
        "route:\n  receiver: estatemon\n  group_by: ['alertname']\n  group_wait: 0s\n  group_interval: 1s\n  repeat_interval: 1s\n\
         receivers:\n  - name: estatemon\n    webhook_configs:\n      - url: http://127.0.0.1:{api_port}/api/v1/intake/alertmanager\n\
        \x20       send_resolved: true\n        http_config:\n          authorization:\n            credentials: {token}\n"
    ))
    .await;
    let http = reqwest::Client::new();
    let alert = serde_json::json!([{
        "labels": {"alertname": "BmsExporterDown", "severity": "critical",
                   "site": "harbour-view", "instance": "bms-a:9100"},
        "annotations": {"summary": "BMS exporter of tower A is down"}
    }]);
    for _ in 0..3 {
        let r = http
            .post(format!("{}/api/v2/alerts", am.url))
            .json(&alert)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
    assert!(
        eventually(StdDuration::from_secs(30), || async {
            sms("BMS exporter of tower A")().await >= 1
        })
        .await,
        "the Prometheus alert paged: {:?}",
        got.lock().unwrap()
    );
    // The control room answers the SMS: the reply, signed by the gateway
    // as Twilio documents (computed here by Python's hmac), acknowledges.
    let reply_url = format!("http://127.0.0.1:{api_port}/oncall/sms");
    let form = [
        ("MessageSid", "SM0001"),
        ("AccountSid", "AC1"),
        ("From", "+852 5555 0199"),
        ("To", "+85230000000"),
        ("Body", "ack"),
    ];
    let mut args: Vec<String> = vec![reply_url.clone()];
    for (k, v) in form {
        args.push(format!("{k}={v}"));
    }
    let signed = Command::new("python3")
        .args([
            "-c",
            "import sys,hmac,hashlib,base64
url=sys.argv[1]
ps=sorted(a.split('=',1) for a in sys.argv[2:])
data=url+''.join(k+v for k,v in ps)
print(base64.b64encode(hmac.new(b'tok',data.encode(),hashlib.sha1).digest()).decode())",
        ])
        .args(&args)
        .output()
        .unwrap();
    let signature = String::from_utf8(signed.stdout).unwrap().trim().to_owned();
    let r = http
        .post(&reply_url)
        .header("X-Twilio-Signature", "AAAAAAAAAAAAAAAAAAAAAAAAAAA=")
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        403,
        "a reply the gateway did not sign acts on nothing"
    );
    let r = http
        .post(&reply_url)
        .header("X-Twilio-Signature", &signature)
        .form(&form)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let twiml = r.text().await.unwrap();
    assert_eq!(
        status,
        200,
        "{twiml} (signature {signature:?}, {:?})",
        String::from_utf8_lossy(&signed.stderr)
    );
    assert!(
        twiml.contains("<Response><Message>Acknowledged alert"),
        "{twiml}"
    );
    let by: String = client
        .query_one(
            "SELECT acknowledged_by FROM alerts WHERE rule = 'BmsExporterDown'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(by.starts_with("Control room (SMS reply to page P"), "{by}");

    // Alertmanager re-sends the group every second: still one alert, one page.
    tokio::time::sleep(StdDuration::from_secs(3)).await;
    assert_eq!(
        db.count(
            "SELECT count(*) FROM alerts WHERE rule = 'BmsExporterDown' AND source = 'intake'"
        )
        .await,
        1
    );
    assert_eq!(
        sms("BMS exporter of tower A")().await,
        1,
        "one page per step"
    );
    // Resolved at Prometheus: resolved here.
    let mut resolved = alert.clone();
    resolved[0]["endsAt"] = serde_json::json!(Utc::now().to_rfc3339());
    http.post(format!("{}/api/v2/alerts", am.url))
        .json(&resolved)
        .send()
        .await
        .unwrap();
    assert!(
        eventually(StdDuration::from_secs(30), || async {
            db.count(
                "SELECT count(*) FROM alerts WHERE rule = 'BmsExporterDown' AND state = 'resolved'",
            )
            .await
                == 1
        })
        .await,
        "resolved through the webhook"
    );

    // A generic alert from any system: opened, a repeat refreshes it,
    // a malformed one is a 400 naming the field.
    let generic = serde_json::json!({"source": "fire-panel-a", "key": "zone-3", "severity": "critical",
        "summary": "Fire panel zone 3 fault", "site": "harbour-view", "building": "tower-a"});
    let intake = format!("http://127.0.0.1:{api_port}/api/v1/intake/alerts");
    for want in [(1, 0), (0, 1)] {
        let r: serde_json::Value = http
            .post(&intake)
            .bearer_auth(&token)
            .json(&generic)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            (
                r["opened"].as_u64().unwrap(),
                r["refreshed"].as_u64().unwrap()
            ),
            want,
            "{r}"
        );
    }
    assert!(
        eventually(StdDuration::from_secs(30), || async {
            sms("Fire panel zone 3 fault")().await == 1
        })
        .await,
        "the generic alert paged once"
    );
    let r = http
        .post(&intake)
        .bearer_auth(&token)
        .json(&serde_json::json!({"source": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("missing field `key`"));

    // The analytics job is checking in; killed, it goes quiet, and the API
    // process pages for it.
    assert!(
        eventually(StdDuration::from_secs(20), || async {
            db.count("SELECT count(*) FROM heartbeats WHERE name = 'estatemon-analytics' AND last_at > now() - interval '5 seconds'").await == 1
        })
        .await,
        "analytics checks in"
    );
    assert_eq!(sms("analytics job stopped")().await, 0);
    analytics.kill().await.unwrap(); // SIGKILL
    let killed = std::time::Instant::now();
    assert!(
        eventually(StdDuration::from_secs(40), || async {
            sms("analytics job stopped")().await >= 1
        })
        .await,
        "the dead analytics job paged"
    );
    let paged_after = killed.elapsed();
    assert!(paged_after < StdDuration::from_secs(25), "{paged_after:?}");
    let (severity, source): (String, String) = {
        let r = client
            .query_one(
                "SELECT severity, source FROM alerts WHERE rule = 'heartbeat_missed' AND subject = 'estatemon-analytics'",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(
        (severity.as_str(), source.as_str()),
        ("emergency", "heartbeat")
    );
    // Back: its first check-in resolves the alert.
    let _analytics = spawn("analytics");
    assert!(
        eventually(StdDuration::from_secs(40), || async {
            db.count("SELECT count(*) FROM alerts WHERE rule = 'heartbeat_missed' AND state = 'resolved'").await == 1
        })
        .await,
        "resolved by the next check-in"
    );
}

/// Time to acknowledge and resolve per severity against the targets, by
/// local week and over the period, and the pages per person with those
/// out of hours: from the API, on alerts whose times are known.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_against_targets_and_load_per_person() {
    let db = TestDb::new(&admin_url());
    let mut config = estatemon_domain::config::Config::default();
    config.database.url = db.url.clone();
    let (client, _) = estatemon_domain::schema::prepare(&config.database, &config.storage)
        .await
        .unwrap();
    let roster_path = std::env::temp_dir().join(format!("{}.toml", unique("roster")));
    std::fs::write(&roster_path, ROSTER).unwrap();
    let roster = Roster::load(&roster_path).unwrap();
    let insert = |fingerprint: &'static str,
                  severity: &'static str,
                  fired: &'static str,
                  source: &'static str,
                  silenced: Option<i64>| {
        let client = &client;
        async move {
            client
                .query_one(
                    "INSERT INTO alerts (rule, subject, fingerprint, severity, summary, labels, site_id,
                                         source, started_at, last_seen_at, fired_at, response_deadline, silenced_by)
                     VALUES ('r', $1, $1, $2, 'x', '{\"site\": \"harbour-view\"}', 'harbour-view', $4,
                             $3::text::timestamptz, $3::text::timestamptz, $3::text::timestamptz, $3::text::timestamptz, $5)
                     RETURNING id",
                    &[&fingerprint, &severity, &fired, &source, &silenced],
                )
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };
    let e1 = insert("e1", "emergency", "2026-12-01T03:00:00+08", "ingest", None).await;
    let e2 = insert("e2", "emergency", "2026-12-08T03:00:00+08", "ingest", None).await;
    let o1 = insert(
        "o1",
        "ordinary",
        "2026-12-08T10:00:00+08",
        "analytics",
        None,
    )
    .await;
    insert("r1", "emergency", "2026-12-08T04:00:00+08", "replay", None).await;
    insert(
        "s1",
        "emergency",
        "2026-12-08T05:00:00+08",
        "ingest",
        Some(1),
    )
    .await;
    // The ladders of both emergencies, planned at 03:00 and 03:05 on 8
    // December. No policy takes a device-less emergency: the site's team
    // (the lift team) is paged, at 03:00 both times: Wong for E1 (the
    // rotation's turn on 1 December), 陳大文 for E2.
    for minutes in [0, 5] {
        plan::plan(
            &client,
            &roster,
            hk("2026-12-08T03:00:00") + Duration::minutes(minutes),
        )
        .await
        .unwrap();
    }
    for (id, ack, closed) in [(e1, 10, Some(40)), (e2, 20, Some(60)), (o1, 90, None)] {
        client
            .execute(
                "UPDATE alerts SET acknowledged_at = fired_at + make_interval(mins => $2),
                        state = CASE WHEN $3::int IS NULL THEN 'acknowledged' ELSE 'resolved' END,
                        closed_at = fired_at + make_interval(mins => $3),
                        resolved_at = fired_at + make_interval(mins => $3)
                  WHERE id = $1",
                &[&id, &ack, &closed],
            )
            .await
            .unwrap();
    }
    config.oncall.roster = Some(roster_path);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(estatemon_api::serve_on(listener, config, async {
        let _ = stopped.await;
    }));
    let token = estatemon_api::create_token(&client, "v", estatemon_api::auth::Role::Viewer, "t")
        .await
        .unwrap();
    let get = |path: String| {
        let token = token.clone();
        async move {
            reqwest::Client::new()
                .get(format!("http://{api}{path}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    let range = "site=harbour-view&from=2026-11-30T00:00:00%2B08:00&to=2026-12-14T00:00:00%2B08:00";
    let weeks = get(format!("/api/v1/oncall/response?{range}&by=week")).await;
    let row = |r: &serde_json::Value| {
        (
            r["period_start"].as_str().unwrap().to_owned(),
            r["severity"].as_str().unwrap().to_owned(),
            r["alerts"].as_u64().unwrap(),
            r["within_target"].as_u64().unwrap(),
            r["median_minutes_to_acknowledge"].as_f64(),
            r["median_minutes_to_resolve"].as_f64(),
            r["open"].as_u64().unwrap(),
        )
    };
    let rows: Vec<_> = weeks.as_array().unwrap().iter().map(row).collect();
    assert_eq!(
        rows,
        [
            (
                "2026-11-29T16:00:00Z".into(),
                "emergency".into(),
                1,
                1,
                Some(10.0),
                Some(40.0),
                0
            ),
            (
                "2026-12-06T16:00:00Z".into(),
                "emergency".into(),
                1,
                0,
                Some(20.0),
                Some(60.0),
                0
            ),
            (
                "2026-12-06T16:00:00Z".into(),
                "ordinary".into(),
                1,
                1,
                Some(90.0),
                None,
                1
            ),
        ],
        "replayed and silenced alerts left out; weeks start on the local Monday"
    );
    let period = get(format!("/api/v1/oncall/response?{range}&by=period")).await;
    let e = &period[0];
    assert_eq!(
        (
            e["severity"].as_str(),
            e["alerts"].as_u64(),
            e["within_target"].as_u64()
        ),
        (Some("emergency"), Some(2), Some(1))
    );
    assert_eq!(
        (
            e["median_minutes_to_acknowledge"].as_f64(),
            e["p90_minutes_to_acknowledge"].as_f64()
        ),
        (Some(15.0), Some(20.0))
    );
    assert_eq!(e["within_target_share"].as_f64(), Some(0.5));
    assert_eq!(e["target_minutes"].as_f64(), Some(15.0));
    let load = get(format!("/api/v1/oncall/load?{range}")).await;
    let people: Vec<(String, u64, u64)> = load
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_owned(),
                r["pages"].as_u64().unwrap(),
                r["out_of_hours"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        people,
        [("陳大文".into(), 1, 1), ("Wong Siu Ming".into(), 1, 1),]
    );
    let bad = reqwest::Client::new()
        .get(format!(
            "http://{api}/api/v1/oncall/response?{range}&by=month"
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let _ = stop.send(());
    let _ = server.await;
}

/// An admin replaces the roster through the API: refused with line and
/// field when it is wrong, stored and audited when right, then paged with
/// by every process; contact details only for admins, each read audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_replaces_the_roster_through_the_api() {
    use estatemon_api::auth::Role;
    let db = TestDb::new(&admin_url());
    let mut config = estatemon_domain::config::Config::default();
    config.database.url = db.url.clone();
    config.api.audit_flush_ms = 20;
    let (mut client, _) = estatemon_domain::schema::prepare(&config.database, &config.storage)
        .await
        .unwrap();
    let admin = estatemon_api::create_token(&client, "boss", Role::Admin, "t")
        .await
        .unwrap();
    let viewer = estatemon_api::create_token(&client, "screen", Role::Viewer, "t")
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(estatemon_api::serve_on(listener, config.clone(), async {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();
    let url = format!("http://{api}/api/v1/oncall/roster");
    let put = |token: String, body: String| {
        let http = http.clone();
        let url = url.clone();
        async move {
            let r = http
                .put(&url)
                .bearer_auth(token)
                .body(body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<serde_json::Value>().await.unwrap())
        }
    };
    assert_eq!(
        http.get(&url)
            .bearer_auth(&viewer)
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        http.get(&url)
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(put(viewer.clone(), ROSTER.into()).await.0, 403);
    for (bad, says) in [
        (
            ROSTER.replace(
                "notify = \"team:hv-lifts\"",
                "notify = \"team:hv-plumbing\"",
            ),
            "policy[0].step[0].notify",
        ),
        (
            ROSTER.replace(
                "members = [\"chan-tai-man\", \"wong-siu-ming\"]",
                "members = []",
            ),
            "members",
        ),
        (
            ROSTER.replace("fallback = \"control-room\"\n", ""),
            "fallback",
        ),
    ] {
        let (status, e) = put(admin.clone(), bad).await;
        let message = e["message"].as_str().unwrap();
        assert_eq!(status, 400, "{e}");
        // "request body:LINE: field `…`: …"
        let line = message
            .strip_prefix("request body:")
            .and_then(|m| m.split(':').next())
            .and_then(|l| l.parse::<u32>().ok());
        assert!(message.contains(says) && line.is_some(), "{message}");
    }
    let (status, e) = put(admin.clone(), String::new()).await;
    assert_eq!(status, 400, "an empty roster would page nobody: {e}");
    let (status, stored) = put(admin.clone(), ROSTER.into()).await;
    assert_eq!(status, 200, "{stored}");
    assert_eq!(
        (stored["people"].as_u64(), stored["policies"].as_u64()),
        (Some(4), Some(1))
    );
    let got: serde_json::Value = http
        .get(&url)
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (got["origin"].as_str(), got["stored_by"].as_str()),
        (Some("stored"), Some("boss"))
    );
    assert!(got["text"].as_str().unwrap().contains("+85255550101"));
    // Viewers see names, never contacts.
    let now = http
        .get(format!(
            "http://{api}/api/v1/oncall/now?at=2026-12-08T10:00:00%2B08:00"
        ))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(now.contains("陳大文") && !now.contains("+852"), "{now}");
    assert!(
        eventually(StdDuration::from_secs(5), || async {
            db.count(
                "SELECT count(*) FROM audit_log WHERE actor = 'boss' AND status = 200
                       AND detail LIKE 'read the on-call roster: contact details of 4 people%'",
            )
            .await
                == 1
                && db
                    .count(
                        "SELECT count(*) FROM audit_log WHERE actor = 'boss' AND status = 200
                       AND detail LIKE 'changed the on-call roster%'",
                    )
                    .await
                    == 1
        })
        .await,
        "each read and change of personal data audited"
    );
    // A phone's calendar subscribes to a signed URL (from the CLI), no
    // login; the feed parses with the icalendar package; a URL signed for
    // someone else is refused; the audit keeps no signature.
    let url = run(estatemon(&db)
        .env("ESTATEMON_ONCALL_PUBLIC_URL", format!("http://{api}"))
        .args(["oncall", "ical", "--person", "chan-tai-man", "--url"]));
    let url = url.lines().last().unwrap().trim().to_owned();
    assert!(
        url.starts_with(&format!("http://{api}/oncall/ical/chan-tai-man/")),
        "{url}"
    );
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/calendar"));
    let feed = r.text().await.unwrap();
    let python = std::env::var_os("ESTATEMON_TEST_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/var/tmp/estatemon-test-venv/bin/python".into());
    let mut child = Command::new(python)
        .args(["-c", "import sys, icalendar\ncal = icalendar.Calendar.from_ical(sys.stdin.buffer.read())\nprint(len(cal.walk('VEVENT')), cal.get('X-WR-CALNAME'))"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(feed.as_bytes())
        .unwrap();
    let parsed = String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap();
    let events: usize = parsed.split_whitespace().next().unwrap().parse().unwrap();
    assert!(events >= 40 && parsed.contains("陳大文"), "{parsed}");
    assert!(!feed.contains("+852"), "shifts only, no contacts");
    let other = url.replace("/chan-tai-man/", "/wong-siu-ming/");
    assert_eq!(http.get(&other).send().await.unwrap().status(), 403);
    assert!(
        eventually(StdDuration::from_secs(5), || async {
            db.count(
                "SELECT count(*) FROM audit_log WHERE path = '/oncall/ical/chan-tai-man/***'
                       AND actor = 'calendar:chan-tai-man' AND status = 200",
            )
            .await
                == 1
        })
        .await,
        "the calendar read audited without its signature"
    );

    // A process with no roster file pages with the stored one.
    client
        .batch_execute(
            "INSERT INTO devices (device_id, kind, site_id) VALUES ('hv-a-lift-1', 'lift', 'harbour-view');
             INSERT INTO alerts (rule, subject, fingerprint, severity, summary, labels, site_id, device_id,
                                 source, started_at, last_seen_at, response_deadline)
             VALUES ('lift_entrapment', 'hv-a-lift-1', 'e', 'emergency', 'Passenger trapped',
                     '{\"site\": \"harbour-view\"}', 'harbour-view', 'hv-a-lift-1', 'ingest',
                     now(), now(), now() + interval '15 minutes')",
        )
        .await
        .unwrap();
    let mut paging = estatemon_analytics::oncall::watch::Paging::new(&config);
    let report = paging
        .pass(&mut client, &config)
        .await
        .unwrap()
        .expect("a roster");
    assert_eq!(report.planned.paged, 1);
    let _ = stop.send(());
    let _ = server.await;
}

/// The simulator's on-call people (one never answers, one answers late,
/// one at once, the control room on a gap) and its ground truth of who
/// should be paged when, against what estatemon paged on a simulated
/// clock, acknowledged through the links in the SMS each person got.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_match_the_simulators_truth_of_who_answers() {
    use estatemon_simulators::oncall::{Responder, Scenario, Who};
    let db = TestDb::new(&admin_url());
    let mut config = estatemon_domain::config::Config::default();
    config.database.url = db.url.clone();
    let (mut client, _) = estatemon_domain::schema::prepare(&config.database, &config.storage)
        .await
        .unwrap();
    let (base, got) = channels("none").await;
    let person = |id: &str, phone: &str, after: Option<i64>| Responder {
        id: id.into(),
        name: id.into(),
        phone: phone.into(),
        answers_after: after.map(Duration::minutes),
    };
    let scenario = Scenario {
        site: "harbour-view".into(),
        people: vec![
            person("wong", "+85255550001", None),
            person("chan", "+85255550002", Some(4)),
            person("manager", "+85255550003", Some(30)),
            person("desk", "+85255550004", Some(2)),
        ],
        shifts: vec![
            (
                "wong".into(),
                hk("2026-12-08T07:00:00"),
                hk("2026-12-08T08:00:00"),
            ),
            (
                "chan".into(),
                hk("2026-12-08T08:00:00"),
                hk("2026-12-08T20:00:00"),
            ),
        ],
        steps: vec![
            (Duration::zero(), Who::OnDuty),
            (Duration::minutes(10), Who::Person("manager".into())),
        ],
        repeat_every: Duration::minutes(15),
        repeat: 3,
        fallback: "desk".into(),
    };
    let roster_path = std::env::temp_dir().join(format!("{}.toml", unique("roster")));
    std::fs::write(&roster_path, scenario.roster_toml()).unwrap();
    let roster = Roster::load(&roster_path).unwrap();
    config.oncall.roster = Some(roster_path);
    config.oncall.channels = vec![toml::from_str(&format!(
        "name = \"sms\"\nformat = \"sms\"\nurl = \"{base}/sms\"\naccount = \"AC1\"\nsecret = \"t\"\n\
         from = \"+85230000000\"\nrate_per_minute = 100000\n"
    ))
    .unwrap()];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = listener.local_addr().unwrap();
    config.oncall.public_url = Some(format!("http://{api}"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(estatemon_api::serve_on(listener, config.clone(), async {
        let _ = stopped.await;
    }));
    let pager = deliver::Pager::new(&config, Arc::new(roster.clone()));
    // Three emergencies: across wong's hour and the hand-over to chan; at
    // the end of chan's day; in the evening gap (the control room).
    let fired = [
        hk("2026-12-08T07:50:00"),
        hk("2026-12-08T19:58:00"),
        hk("2026-12-08T21:00:00"),
    ];
    let mut ids = Vec::new();
    for (k, at) in fired.iter().enumerate() {
        ids.push(
            client
                .query_one(
                    "INSERT INTO alerts (rule, subject, fingerprint, severity, summary, labels, site_id,
                                         source, started_at, last_seen_at, fired_at, response_deadline)
                     VALUES ('lift_entrapment', $1, $1, 'emergency', 'Passenger trapped',
                             jsonb_build_object('site', 'harbour-view', 'device', $1::text), 'harbour-view',
                             'ingest', $2, $2, $2, $2::timestamptz + interval '15 minutes')
                     RETURNING id",
                    &[&format!("lift-{k}"), at],
                )
                .await
                .unwrap()
                .get::<_, i64>(0),
        );
    }
    let http = reqwest::Client::new();
    let mut acted: std::collections::HashSet<String> = Default::default();
    for &start in &fired {
        for minute in 0..=50 {
            let now = start + Duration::minutes(minute);
            // The people first: whoever was paged and answers by now
            // presses the link in their SMS.
            let messages = got.lock().unwrap().clone();
            for (_, body) in messages {
                let form: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes())
                    .into_owned()
                    .collect();
                let text = &form["Body"];
                let page: i64 = text[text.rfind("(ref P").unwrap() + 6..text.len() - 1]
                    .parse()
                    .unwrap();
                let (who, due): (String, DateTime<Utc>) = {
                    let r = client
                        .query_one(
                            "SELECT person, due_at FROM oncall_pages WHERE id = $1",
                            &[&page],
                        )
                        .await
                        .unwrap();
                    (r.get(0), r.get(1))
                };
                let link = text
                    .split_whitespace()
                    .skip_while(|w| *w != "Acknowledge:")
                    .nth(1)
                    .unwrap()
                    .to_owned();
                if !acted.contains(&link) && scenario.answers_by(&who, due, now) {
                    acted.insert(link.clone());
                    assert_eq!(http.post(&link).send().await.unwrap().status(), 200);
                }
            }
            plan::plan(&client, &roster, now).await.unwrap();
            drain(&mut client, &pager).await;
        }
    }
    for (k, at) in fired.iter().enumerate() {
        let truth = scenario.expected(*at);
        let paged: Vec<(String, DateTime<Utc>, bool)> = client
            .query(
                "SELECT person, due_at, flagged FROM oncall_pages WHERE alert_id = $1 ORDER BY due_at, id",
                &[&ids[k]],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        let want: Vec<(String, DateTime<Utc>, bool)> = truth
            .pages
            .iter()
            .map(|p| (p.person.clone(), p.at, p.fallback))
            .collect();
        assert_eq!(paged, want, "alert {k} fired {at}");
        let by: Option<String> = client
            .query_one(
                "SELECT acknowledged_by FROM alerts WHERE id = $1",
                &[&ids[k]],
            )
            .await
            .unwrap()
            .get(0);
        let (who, _) = truth.answered.clone().unwrap();
        assert!(
            by.as_deref()
                .is_some_and(|b| b.starts_with(&format!("{who} (link"))),
            "{by:?} vs {who}"
        );
    }
    // The truth's own story, spelled out for the first alert: wong (never
    // answers) at 07:50, the manager at 08:00, then chan after the 08:00
    // hand-over at 08:05, who answers at 08:09.
    let first = scenario.expected(fired[0]);
    let story: Vec<&str> = first.pages.iter().map(|p| p.person.as_str()).collect();
    assert_eq!(story, ["wong", "manager", "chan"]);
    assert_eq!(scenario.expected(fired[2]).pages[0].person, "desk");
    let _ = stop.send(());
    let _ = server.await;
}

/// `estatemon oncall test --policy P` pages every step's person on every
/// contact method now and prints what each receiver answered; a failed
/// method or a person no channel reaches makes it exit 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oncall_test_pages_every_step_and_says_what_each_receiver_answered() {
    let db = TestDb::new(&admin_url());
    let (base, got) = channels("+85255550001").await;
    let roster = std::env::temp_dir().join(format!("{}.toml", unique("roster")));
    std::fs::write(
        &roster,
        r#"
[[person]]
id = "a"
name = "陳大文"
language = "zh"
contacts = { phone = "+85255550001", telegram = "42" }
[[person]]
id = "b"
name = "Engineering manager"
contacts = { email = "manager@estate.example" }
[[team]]
id = "duty"
site = "harbour-view"
trade = "lifts"
time_zone = "Asia/Hong_Kong"
[[team.layer]]
name = "always"
members = ["a"]
start = 2026-01-05T08:00:00
every = "1w"
[[policy]]
id = "lifts"
severities = ["emergency"]
site = "harbour-view"
fallback = "a"
[[policy.step]]
after = "0m"
notify = "team:duty"
[[policy.step]]
after = "5m"
notify = "person:b"
"#,
    )
    .unwrap();
    let config = std::env::temp_dir().join(format!("{}.toml", unique("config")));
    let channel = |name: &str, extra: &str| {
        format!("[[oncall.channel]]\nname = \"{name}\"\nformat = \"{name}\"\nurl = \"{base}/{name}\"\n{extra}")
    };
    let phone = "account = \"AC1\"\nsecret = \"t\"\nfrom = \"+85230000000\"\n";
    std::fs::write(
        &config,
        format!(
            "[oncall]\nroster = \"{}\"\n{}{}{}",
            roster.display(),
            channel("voice", phone),
            channel("sms", phone),
            channel("telegram", "")
        ),
    )
    .unwrap();
    let out = estatemon(&db)
        .arg("--config")
        .arg(&config)
        .args(["oncall", "test", "--policy", "lifts"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("step 1: 陳大文 by voice (phone): FAILED:")
            && lines[0].contains("HTTP 500"),
        "{text}"
    );
    assert_eq!(lines[1], "step 1: 陳大文 by sms (phone): accepted");
    assert_eq!(lines[2], "step 1: 陳大文 by telegram (telegram): accepted");
    assert_eq!(
        lines[3],
        "step 2: Engineering manager — no channel for email"
    );
    assert_eq!(
        lines[4],
        "step 2: Engineering manager — NO contact method has a channel"
    );
    let sms: HashMap<String, String> =
        url::form_urlencoded::parse(got.lock().unwrap()[1].1.as_bytes())
            .into_owned()
            .collect();
    assert!(
        sms["Body"].starts_with("【測試】estatemon 值班測試：lifts step 1"),
        "{sms:?}"
    );
}

/// A channel over its limit a minute holds the page (tried again shortly)
/// rather than counting a failed try: a storm does not exhaust a person's
/// methods in seconds and fall through to people who were not due.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_over_its_limit_holds_pages_without_failing_them() {
    let db = TestDb::new(&admin_url());
    let mut config = estatemon_domain::config::Config::default();
    config.database.url = db.url.clone();
    let (mut client, _) = estatemon_domain::schema::prepare(&config.database, &config.storage)
        .await
        .unwrap();
    let (base, got) = channels("none").await;
    config.oncall.tries_per_method = 1;
    config.oncall.channels = vec![toml::from_str(&format!(
        "name = \"sms\"\nformat = \"sms\"\nurl = \"{base}/sms\"\naccount = \"AC1\"\nsecret = \"t\"\n\
         from = \"+85230000000\"\nrate_per_minute = 2\n"
    ))
    .unwrap()];
    let roster = Roster::parse(DESK_ROSTER, std::path::Path::new("desk.toml")).unwrap();
    client
        .batch_execute(
            "INSERT INTO alerts (rule, subject, fingerprint, severity, summary, labels, site_id,
                                 source, started_at, last_seen_at, response_deadline)
             SELECT 'lift_entrapment', 'lift-' || g, 'f' || g, 'emergency', 'Passenger trapped',
                    '{\"site\": \"harbour-view\"}', 'harbour-view', 'ingest', now(), now(),
                    now() + interval '15 minutes'
               FROM generate_series(1, 5) g",
        )
        .await
        .unwrap();
    let pager = deliver::Pager::new(&config, Arc::new(roster.clone()));
    assert_eq!(
        plan::plan(&client, &roster, Utc::now())
            .await
            .unwrap()
            .paged,
        5
    );
    let pass = deliver::deliver_due(&mut client, &pager).await.unwrap();
    assert_eq!(
        (pass.sent, pass.held, pass.failed, pass.fell_through),
        (2, 3, 0, 0)
    );
    assert_eq!(got.lock().unwrap().len(), 2);
    assert_eq!(
        db.count(
            "SELECT count(*) FROM oncall_pages WHERE delivered_at IS NULL AND failed_at IS NULL
               AND tries = 0 AND last_error LIKE '%over the channel''s limit of 2 messages a minute%'
               AND next_attempt_at > now()"
        )
        .await,
        3,
        "held, not failed, and tried again shortly"
    );
}

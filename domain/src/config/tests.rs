use super::*;

fn write(text: &str) -> (tempdir::Dir, PathBuf) {
    let dir = tempdir::Dir::new();
    let path = dir.0.join("estatemon.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

mod tempdir {
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new() -> Dir {
            let p = std::env::temp_dir().join(format!(
                "estatemon-config-{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos()
            ));
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[test]
fn the_example_file_loads_and_matches_defaults_where_it_says_so() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../estatemon.example.toml");
    let config = Config::load_with_env(Some(&path), Vec::new()).unwrap();
    assert_eq!(config.mqtt.topics, TopicsConfig::default());
    assert_eq!(config.database.url, DatabaseConfig::default().url);
    assert_eq!(config.energy, EnergyConfig::default());
}

#[test]
fn bad_tariffs_and_targets_name_the_field_and_line() {
    let (_d, path) = write(
        "[energy]\n[[energy.tariffs]]\nutility = \"electricity\"\nprice = 1.0\n  [[energy.tariffs.period]]\n  name = \"peak\"\n  from_hour = 22\n  to_hour = 8\n  price = 2.0\n",
    );
    let e = Config::load_with_env(Some(&path), Vec::new())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("energy.tariffs.period.to_hour") && e.contains("estatemon.toml:8:"),
        "{e}"
    );
    let (_d, path) = write("[[energy.targets]]\npurpose = \"public_lighting\"\nsaving = 35\n");
    let e = Config::load_with_env(Some(&path), Vec::new())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("energy.targets.saving") && e.contains("estatemon.toml:3:"),
        "{e}"
    );
}

#[test]
fn tariffs_and_targets_pick_the_most_specific() {
    use crate::device::{Purpose, Utility};
    let mut e = EnergyConfig::default();
    assert_eq!(
        e.target(Purpose::PublicLighting, Some("garage")),
        Some(0.45)
    );
    assert_eq!(e.target(Purpose::PublicLighting, Some("lobby")), Some(0.35));
    assert_eq!(e.target(Purpose::Hvac, None), None);
    let general = e.tariff(Utility::Electricity, "x").unwrap();
    assert_eq!(general.price_at(3, true), 0.62);
    assert_eq!(general.price_at(8, true), 0.98);
    assert_eq!(general.price_at(22, false), 0.62);
    e.tariffs.push(Tariff {
        utility: Utility::Electricity,
        site: Some("x".into()),
        price: 1.1,
        periods: vec![],
        source: String::new(),
    });
    assert_eq!(e.tariff(Utility::Electricity, "x").unwrap().price, 1.1);
    assert_eq!(e.tariff(Utility::Electricity, "y").unwrap().price, 0.62);
}

#[test]
fn a_site_with_its_own_currency_is_priced_only_in_it() {
    use crate::device::Utility;
    let general = EnergyConfig::default();
    // Tariffs and factors follow the registry's supplier, not the site id.
    let e = general.for_site("harbour-view", Some("clp")).unwrap();
    assert_eq!(
        general.currency_of("harbour-view"),
        "CNY",
        "no site-id default"
    );
    assert_eq!(e.currency_of("harbour-view"), "HKD");
    assert_eq!(e.currency_of("elsewhere"), "CNY");
    assert_eq!(
        e.tariff(Utility::Electricity, "harbour-view")
            .unwrap()
            .price,
        1.406
    );
    assert_eq!(e.tariff(Utility::Gas, "harbour-view").unwrap().price, 5.61);
    // A utility without a tariff in the site's currency has no cost,
    // never the yuan one.
    let mut no_gas = general.clone();
    for s in &mut no_gas.suppliers {
        s.tariffs.retain(|t| t.utility != Utility::Gas);
    }
    let no_gas = no_gas.for_site("harbour-view", Some("clp")).unwrap();
    assert!(no_gas.tariff(Utility::Gas, "harbour-view").is_none());
    assert_eq!(e.tariff(Utility::Gas, "elsewhere").unwrap().price, 3.5);
    let hk = e.emission_factors_of("harbour-view");
    assert_eq!(hk.electricity_kg_per_kwh, 0.39);
    assert_eq!(hk.water_kg_per_m3, 0.336);
    assert_eq!(hk.year, Some(2023));
    assert!(hk.source.contains("CLP"));
    assert_eq!(
        e.emission_factors_of("elsewhere").electricity_kg_per_kwh,
        0.5703
    );
    // The same site on Hong Kong Island: HK Electric's tariff and factor.
    let island = general
        .for_site("harbour-view", Some("hk-electric"))
        .unwrap();
    assert_eq!(
        island
            .tariff(Utility::Electricity, "harbour-view")
            .unwrap()
            .price,
        1.633
    );
    assert_eq!(
        island
            .emission_factors_of("harbour-view")
            .electricity_kg_per_kwh,
        0.81
    );
    // The site's own configured tariff wins over its supplier's.
    let mut own = general.clone();
    own.tariffs.push(Tariff {
        utility: Utility::Electricity,
        site: Some("harbour-view".into()),
        price: 1.2,
        periods: vec![],
        source: "negotiated".into(),
    });
    let own = own.for_site("harbour-view", Some("clp")).unwrap();
    assert_eq!(
        own.tariff(Utility::Electricity, "harbour-view")
            .unwrap()
            .price,
        1.2
    );
    // A supplier nobody defined is an error that names the defined ones.
    let err = general
        .for_site("harbour-view", Some("towngas"))
        .unwrap_err();
    assert!(
        err.to_string().contains("defined: clp, hk-electric"),
        "{err}"
    );
}

#[test]
fn bad_site_locales_name_the_field() {
    let (_d, path) = write(
        "[energy]\n[[energy.site]]\nsite = \"a\"\ncurrency = \"HKD\"\n  [energy.site.emission_factors]\n  electricity_kg_per_kwh = -1\n  water_kg_per_m3 = 0\n  gas_kg_per_m3 = 0\n  source = \"x\"\n",
    );
    let e = Config::load_with_env(Some(&path), Vec::new())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("energy.emission_factors.electricity_kg_per_kwh"),
        "{e}"
    );
    let (_d, path) = write("[energy]\n[[energy.site]]\nsite = \"a\"\ncurrency = \" \"\n");
    let e = Config::load_with_env(Some(&path), Vec::new())
        .unwrap_err()
        .to_string();
    assert!(e.contains("energy.site.currency"), "{e}");
}

#[test]
fn environment_overrides_file() {
    let (_d, path) = write("[ingest]\nbatch_linger_ms = 20\n");
    let env = vec![
        (
            "ESTATEMON_DATABASE_URL".into(),
            "postgres://u@db:5433/x".into(),
        ),
        (
            "ESTATEMON_MQTT_URL".into(),
            "mqtt://dev:secret@broker:1884".into(),
        ),
        ("ESTATEMON_INGEST_WRITERS".into(), "3".into()),
        ("ESTATEMON_MQTT_SHARED_GROUP".into(), "ingest".into()),
        (
            "ESTATEMON_MQTT__TOPICS__SENML".into(),
            "gw/{device_id}/up".into(),
        ),
        ("ESTATEMON_TEST_ONLY_THING".into(), "ignored".into()),
        ("PATH".into(), "/bin".into()),
    ];
    let c = Config::load_with_env(Some(&path), env).unwrap();
    assert_eq!(c.database.url, "postgres://u@db:5433/x");
    assert_eq!(c.ingest.batch_linger_ms, 20);
    assert_eq!(c.ingest.writers, 3);
    assert_eq!(c.mqtt.shared_group.as_deref(), Some("ingest"));
    assert_eq!(c.mqtt.topics.senml, "gw/{device_id}/up");
    let ep = c.mqtt.endpoint().unwrap();
    assert_eq!(
        (
            ep.host.as_str(),
            ep.port,
            ep.username.as_deref(),
            ep.password.as_deref()
        ),
        ("broker", 1884, Some("dev"), Some("secret"))
    );
}

#[test]
fn bad_files_name_line_and_field() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "[ingest]\nwriters = 2\nbatch_linger_ms = \"fast\"\n",
            ":3:",
            "ingest.batch_linger_ms",
        ),
        (
            "[mqtt]\nurl = \"mqtt://x\"\nclient_idd = \"a\"\n",
            ":3:",
            "mqtt.client_idd",
        ),
        ("[storage]\nmode = \"cassandra\"\n", ":2:", "storage.mode"),
        (
            "[mqtt.topics]\ntelemetry = \"a/{site}/b\"\n",
            ":2",
            "mqtt.topics.telemetry",
        ),
        ("[ingest]\nwriters = 0\n", ":2", "ingest.writers"),
        ("[mqtt]\nurl = \"http://broker\"\n", ":2", "mqtt.url"),
        ("[ingest\nwriters = 1\n", ":1:", "ingest"),
        // A channel missing what it needs to send (issue 31).
        (
            "[[alerts.webhooks]]\nname = \"duty-phone\"\nurl = \"https://sms.example/Messages.json\"\nformat = \"sms\"\naccount = \"AC1\"\nsecret = \"t\"\nfrom = \"+85200000000\"\n",
            ":",
            "alerts.webhooks.to",
        ),
        (
            "[[alerts.webhooks]]\nname = \"tg\"\nurl = \"https://api.telegram.org/botX/sendMessage\"\nformat = \"telegram\"\n",
            ":",
            "alerts.webhooks.chat_id",
        ),
    ];
    for (text, line, field) in cases {
        let (_d, path) = write(text);
        let err = Config::load_with_env(Some(&path), Vec::new())
            .expect_err(text)
            .to_string();
        assert!(err.contains("estatemon.toml"), "{err}");
        assert!(err.contains(line), "want line {line}: {err}");
        assert!(err.contains(field), "want field {field}: {err}");
    }
}

#[test]
fn bad_environment_names_the_variable() {
    let env = vec![("ESTATEMON_INGEST_WRITERS".into(), "many".into())];
    let err = Config::load_with_env(None, env).unwrap_err().to_string();
    assert!(err.contains("ESTATEMON_INGEST_WRITERS"), "{err}");
}

#[test]
fn topic_templates() {
    assert!(check_topic_template("estatemon/{site}/{device_id}/telemetry").is_ok());
    assert!(check_topic_template("gw/{device_id}").is_ok());
    assert!(check_topic_template("gw/{site}").is_err());
    assert!(check_topic_template("gw/dev-{device_id}").is_err());
    assert!(check_topic_template("gw/+/{device_id}").is_err());
}

#[test]
fn passwords_are_redacted() {
    assert_eq!(
        redact_url("postgres://u:hunter2@h/db"),
        "postgres://u:***@h/db"
    );
    assert!(!redact_url("postgres://u@h/db?password=hunter2").contains("hunter2"));
    assert!(!redact_url("host=h user=u password=hunter2 dbname=x").contains("hunter2"));
    let err = MqttConfig {
        url: "mqtts://u:hunter2@h".into(),
        ..Default::default()
    }
    .endpoint()
    .unwrap_err();
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn passwords_in_lists_and_multi_host_urls_are_redacted() {
    for url in [
        "mqtt://u:hunter2@n1:1883,mqtt://u:hunter2@n2:1884",
        "postgres://u:hunter2@primary:5432,standby:5432/db?target_session_attrs=read-write",
        "postgres://u@primary:5432,standby:5432/db?password=hunter2&sslmode=disable",
        "nats://a:hunter2@n1:4222, nats://a:hunter2@n2:4222",
        // Raw `/` and `@` in passwords, which the url crate cannot parse.
        "mqtt://u:hunter2/x@n1:1883",
        "postgres://app:hunter2/x@h1:5432,h2:5432/db",
        "postgres://u:p@hunter2@h1:5432,h2:5432/db",
        // A key=value string that holds a URL, and a query a comma splits.
        "host=db user=app password=hunter2 application_name=http://x",
        "postgres://u@h/db?application_name=a,b://c&password=hunter2",
    ] {
        let shown = redact_url(url);
        assert!(!shown.contains("hunter2"), "{url} → {shown}");
        assert!(shown.contains("***"), "{shown}");
    }
    assert_eq!(
        redact_url("postgres://u:pw@primary:5432,standby:5432/db"),
        "postgres://u:***@primary:5432,standby:5432/db"
    );
}

#[test]
fn several_mqtt_brokers_are_tried_in_turn() {
    let c = MqttConfig {
        url: "mqtt://n1:1883, mqtt://dev:p,w@n2:1884,tcp://n3".into(),
        ..Default::default()
    };
    let eps = c.endpoints().unwrap();
    let got: Vec<_> = eps
        .iter()
        .map(|e| (e.host.as_str(), e.port, e.password.as_deref()))
        .collect();
    assert_eq!(
        got,
        [
            ("n1", 1883, None),
            ("n2", 1884, Some("p,w")),
            ("n3", 1883, None)
        ]
    );
    assert_eq!(c.endpoint().unwrap().host, "n1");
    let bad = MqttConfig {
        url: "mqtt://n1:1883,mqtts://n2:8883".into(),
        ..Default::default()
    };
    assert!(bad.endpoints().unwrap_err().contains("scheme"));
    // NATS's own shorthand, or a comma after the last URL: refused, not a
    // host named `n1,n2`.
    for url in ["mqtt://n1,n2,n3", "mqtt://n1,mqtt://n2,"] {
        let c = MqttConfig {
            url: url.into(),
            ..Default::default()
        };
        assert!(c.endpoints().unwrap_err().contains("comma"), "{url}");
    }
    // Only the nodes of a NATS cluster share sessions.
    let mut config = Config::default();
    config.mqtt.url = "mqtt://a:1883,mqtt://b:1883".into();
    let err = config.validate(None, None).unwrap_err().to_string();
    assert!(err.contains("mqtt.url") && err.contains("NATS"), "{err}");
    config.ingest.source = Source::Nats;
    config.validate(None, None).unwrap();
}

#[test]
fn mqtt_credentials_are_percent_decoded() {
    let ep = MqttConfig {
        url: "mqtt://dev%2B1:p%2Bq%3Dr+s@h:1883".into(),
        ..Default::default()
    }
    .endpoint()
    .unwrap();
    assert_eq!(ep.username.as_deref(), Some("dev+1"));
    assert_eq!(ep.password.as_deref(), Some("p+q=r+s"));
}

#[test]
fn a_numeric_secret_from_the_environment_stays_text() {
    let env = vec![("ESTATEMON_INGEST_PSEUDONYM_KEY".into(), "8472938472".into())];
    let c = Config::load_with_env(None, env).unwrap();
    assert_eq!(c.ingest.pseudonym_key.as_deref(), Some("8472938472"));
}

#[test]
fn a_nats_ingestor_names_what_it_cannot_do_and_bad_nats_fields() {
    // Sparkplug and discovery over NATS: read on the MQTT session, so the
    // stream must not capture them as well.
    let sparkplug =
        "[ingest]\nsource = \"nats\"\n\n[ingest.sparkplug]\nenabled = true\nsite = \"s\"\n";
    let (_d, path) = write(sparkplug);
    Config::load_with_env(Some(&path), Vec::<(String, String)>::new()).unwrap();
    let (_d, path) = write(&format!(
        "{sparkplug}\n[nats]\nsubjects = [\"estatemon.>\", \">\"]\n"
    ));
    let e = Config::load_with_env(Some(&path), Vec::<(String, String)>::new())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("nats.subjects") && e.contains("twice") && e.contains("`>`"),
        "{e}"
    );
    let (_d, path) = write(
        "[ingest]\nsource = \"nats\"\n\n[ingest.homeassistant]\nenabled = true\n\n[nats]\nsubjects = [\"homeassistant.*.*.config\"]\n",
    );
    let e = Config::load_with_env(Some(&path), Vec::<(String, String)>::new())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("nats.subjects") && e.contains("homeassistant/+/+/config"),
        "{e}"
    );
    // Wildcards that reach them another way are refused too; subjects
    // beside them are not.
    for (subjects, refused) in [
        (r#"["spBv1//0.*.DDATA.>"]"#, true),
        (r#"["spBv1//0.*.*.*.*"]"#, true),
        (r#"["*.>"]"#, true),
        (r#"["homeassistant.binary_sensor.>"]"#, true),
        (r#"["homeassistant.*.*.*.config"]"#, true),
        (
            r#"["estatemon.>", "tele.*.SENSOR", "homeassistant.sensor.x.state"]"#,
            false,
        ),
    ] {
        let (_d, path) = write(&format!(
            "[ingest]\nsource = \"nats\"\n\n[ingest.sparkplug]\nenabled = true\nsite = \"s\"\n\n[ingest.homeassistant]\nenabled = true\n\n[nats]\nsubjects = {subjects}\n"
        ));
        let r = Config::load_with_env(Some(&path), Vec::<(String, String)>::new());
        assert_eq!(r.is_err(), refused, "{subjects}: {r:?}");
    }
    for (text, field) in [
        (
            "[ingest]\nsource = \"nats\"\n\n[nats]\nreplicas = 2\n",
            "nats.replicas",
        ),
        (
            "[ingest]\nsource = \"nats\"\n\n[nats]\nurl = \"http://x\"\n",
            "nats.url",
        ),
        (
            "[ingest]\nsource = \"nats\"\n\n[nats]\nstream = \"a.b\"\n",
            "nats.stream",
        ),
        (
            "[ingest]\nsource = \"nats\"\n\n[nats]\nsubjects = [\"a.>.b\"]\n",
            "nats.subjects",
        ),
    ] {
        let (_d, path) = write(text);
        let e = Config::load_with_env(Some(&path), Vec::<(String, String)>::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains(field), "{text}: {e}");
    }
    // The same fields are not checked for an MQTT ingestor.
    let (_d, path) = write("[nats]\nreplicas = 2\n");
    assert!(Config::load_with_env(Some(&path), Vec::<(String, String)>::new()).is_ok());
}

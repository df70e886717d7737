use super::*;
use crate::cli::{ProxyArgs, UpCmd};
use crate::config::{FileConfig, resolve};
use crate::docker::replicas;

fn settings(args: ProxyArgs) -> ProxySettings {
    resolve::proxy(&args, &FileConfig::default()).unwrap()
}

fn open_webui(project: &Project, replicas_n: u64) -> ServiceDef {
    let up = crate::config::up::up(&UpCmd::default(), &FileConfig::default()).unwrap();
    let c = spec::open_webui(&spec::OpenWebuiInputs {
        project,
        settings: &up,
        image_id: String::new(),
        image_digest: None,
        secret_key: "k".repeat(32),
        public_url: "https://chat.example.com".into(),
        cors: None,
        ollama_url: None,
        host_gateway: false,
        openai_key: None,
        extra_env: vec![],
        gpus: false,
    });
    let c = replicas::with_scale_env(c, &replicas::scale_env("pw0123456789abcdef", true));
    let mut d = ServiceDef::from_container(&SwarmNames::new(project).open_webui, &c, replicas_n);
    d.health = Some(open_webui_health());
    d
}

#[test]
fn names_are_prefixed_and_the_upstream_is_the_tasks_dns_name() {
    let n = SwarmNames::new(&Project::named("t-s").unwrap());
    assert_eq!(n.network, "t-s-webui-swarm");
    assert_eq!(n.open_webui, "t-s-open-webui");
    assert_eq!(n.proxy, "t-s-proxy");
    assert_eq!(n.upstream(), "http://tasks.t-s-open-webui:8080");
    assert_eq!(SwarmNames::new(&Project::default()).postgres, "postgres");
}

#[test]
fn open_webui_is_replicated_unpublished_health_checked_and_labelled() {
    let p = Project::named("t-s").unwrap();
    let d = open_webui(&p, 3);
    let s = d.service_spec(&p, "t-s-webui-swarm");
    assert_eq!(s.mode.unwrap().replicated.unwrap().replicas, Some(3));
    let endpoint = s.endpoint_spec.unwrap();
    assert_eq!(endpoint.ports, None, "never published");
    assert_eq!(
        endpoint.mode,
        Some(EndpointSpecModeEnum::DNSRR),
        "no virtual IP"
    );
    let labels = s.labels.unwrap();
    assert_eq!(labels[LABEL_PROJECT], "t-s");
    assert_eq!(labels[LABEL_ROLE], "open-webui");
    assert_eq!(labels[LABEL_HASH], d.hash());
    let task = s.task_template.unwrap();
    let c = task.container_spec.unwrap();
    let env = c.env.unwrap();
    for want in [
        format!(
            "DATABASE_URL={}",
            replicas::database_url("pw0123456789abcdef")
        ),
        "WEBSOCKET_MANAGER=redis".to_string(),
        "REDIS_URL=redis://redis:6379/0".to_string(),
    ] {
        assert!(env.contains(&want), "{want} in {env:?}");
    }
    assert!(
        replicas::database_url("x").contains("@postgres:5432/"),
        "the alias the postgres service has"
    );
    assert!(env.iter().any(|e| e.starts_with("WEBUI_SECRET_KEY=")));
    assert_eq!(c.health_check.unwrap().test.unwrap(), open_webui_health());
    let mount = &c.mounts.unwrap()[0];
    assert_eq!(mount.source.as_deref(), Some("t-s-open-webui"));
    assert_eq!(
        mount
            .volume_options
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .unwrap()[LABEL_PROJECT],
        "t-s"
    );
    let net = &task.networks.unwrap()[0];
    assert_eq!(net.target.as_deref(), Some("t-s-webui-swarm"));
    let upd = s.update_config.unwrap();
    assert_eq!(upd.parallelism, Some(1));
    assert_eq!(
        upd.order,
        Some(ServiceSpecUpdateConfigOrderEnum::START_FIRST)
    );
    // Secrets never show in the stored summary.
    let summary = labels[LABEL_SPEC].clone();
    assert!(!summary.contains("pw0123456789abcdef"), "{summary}");
    assert!(!summary.contains(&"k".repeat(32)), "{summary}");
}

#[test]
fn a_changed_setting_changes_the_hash_and_the_diff_names_it() {
    let p = Project::default();
    let a = open_webui(&p, 2);
    let b = open_webui(&p, 3);
    assert_ne!(a.hash(), b.hash());
    assert_eq!(a.hash(), open_webui(&p, 2).hash(), "stable");
    assert_eq!(
        spec::diff(&a.summary(), &b.summary()),
        ["replicas: 2 -> 3".to_string()]
    );
}

#[test]
fn the_proxy_publishes_in_host_mode_on_this_node_and_stops_first() {
    let p = Project::named("t-s").unwrap();
    let names = SwarmNames::new(&p);
    let ports = Ports {
        https: 8443,
        http: Some(8080),
    };
    let d = proxy_def(
        &names,
        "webui.invalid/proxy:x",
        "node1",
        vec!["proxy".into()],
        ports,
        vec![],
    );
    let s = d.service_spec(&p, &names.network);
    let published = s.endpoint_spec.unwrap().ports.unwrap();
    assert_eq!(published.len(), 2);
    for (port, want) in published.iter().zip([8443, 8080]) {
        assert_eq!(port.published_port, Some(want));
        assert_eq!(port.target_port, Some(want));
        assert_eq!(
            port.publish_mode,
            Some(EndpointPortConfigPublishModeEnum::HOST)
        );
    }
    let task = s.task_template.unwrap();
    assert_eq!(
        task.placement.unwrap().constraints.unwrap(),
        ["node.id==node1".to_string()]
    );
    assert_eq!(
        s.update_config.unwrap().order,
        Some(ServiceSpecUpdateConfigOrderEnum::STOP_FIRST)
    );
    let c = task.container_spec.unwrap();
    assert_eq!(
        c.mounts.unwrap()[0].target.as_deref(),
        Some(image::STATE_DIR)
    );
}

#[test]
fn ports_must_be_wildcards_and_one_each() {
    let s = settings(ProxyArgs {
        listen: vec![":8443".into()],
        http_listen: vec!["0.0.0.0:8080".into()],
        ..Default::default()
    });
    assert_eq!(
        Ports::of(&s).unwrap(),
        Ports {
            https: 8443,
            http: Some(8080)
        }
    );
    assert_eq!(
        Ports::of(&settings(ProxyArgs::default())).unwrap().https,
        443
    );
    let s = settings(ProxyArgs {
        listen: vec!["127.0.0.1:8443".into()],
        ..Default::default()
    });
    let e = format!("{:#}", Ports::of(&s).unwrap_err());
    assert!(e.contains("every address"), "{e}");
    let s = settings(ProxyArgs {
        listen: vec!["0.0.0.0:8443".into(), "0.0.0.0:9443".into()],
        ..Default::default()
    });
    assert!(Ports::of(&s).is_err());
    let s = settings(ProxyArgs {
        listen: vec!["0.0.0.0:8443".into()],
        no_http: Some(true),
        ..Default::default()
    });
    assert_eq!(Ports::of(&s).unwrap().http, None);
}

#[test]
fn proxy_args_carry_the_resolved_settings_and_the_secret_paths() {
    let s = settings(ProxyArgs {
        listen: vec![":8443".into()],
        no_http: Some(true),
        domain: vec!["chat.example.com".into()],
        self_signed: Some(true),
        max_body: Some("10M".into()),
        no_hsts: Some(true),
        ..Default::default()
    });
    let ports = Ports::of(&s).unwrap();
    let tls = ProxyTls::Files {
        cert: SecretFile {
            id: "c".into(),
            name: "t-tls-cert-1".into(),
        },
        key: SecretFile {
            id: "k".into(),
            name: "t-tls-key-1".into(),
        },
    };
    let a = proxy_args(&s, ports, "http://tasks.x:8080", &tls).join(" ");
    for want in [
        "--state-dir /var/lib/webui proxy --upstream http://tasks.x:8080",
        "--listen 0.0.0.0:8443 --no-http",
        "--domain chat.example.com",
        "--tls-cert /run/secrets/t-tls-cert-1 --tls-key /run/secrets/t-tls-key-1",
        "--max-body 10485760",
        "--no-hsts",
        "--response-timeout 3600000ms",
    ] {
        assert!(a.contains(want), "{want} in {a}");
    }
    // Every argument parses as `webui proxy` flags.
    let argv = std::iter::once("webui".to_string())
        .chain(proxy_args(&s, ports, "http://tasks.x:8080", &tls))
        .collect::<Vec<_>>();
    let cli = <crate::cli::Cli as clap::Parser>::try_parse_from(argv).unwrap();
    let crate::cli::Command::Proxy(p) = cli.command else {
        panic!("not the proxy command")
    };
    let again = resolve::proxy(&p.proxy, &FileConfig::default()).unwrap();
    assert_eq!(again.max_body, s.max_body);
    assert_eq!(again.response_timeout, s.response_timeout);
    assert_eq!(again.domains, s.domains);
}

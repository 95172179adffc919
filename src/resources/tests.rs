//! Snapshot tests of rendered objects and validation rules.

use super::testdata::{server, sku};
use super::*;
use crate::api::server::ServerType;

/// Every object a server renders to, as one YAML stream for a snapshot.
fn render_all(yaml: &str) -> String {
    let s = server("survival", yaml);
    let mut k = sku("small");
    k.spec.allowed_storage_classes = vec!["fast".into()];
    k.spec.allowed_service_annotations = vec!["metallb.universe.tf/*".into()];
    let m = validate(&s, Some(&k), None, None).expect("valid");
    let mut out = String::new();
    let mut push = |o: serde_yaml::Value| {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&o).unwrap());
    };
    push(serde_yaml::to_value(pvc::build(&m, true)).unwrap());
    push(serde_yaml::to_value(config_map::build(&m)).unwrap());
    push(serde_yaml::to_value(service::game(&m)).unwrap());
    push(serde_yaml::to_value(statefulset::build(&m)).unwrap());
    out
}

#[test]
fn snapshot_vanilla() {
    insta::assert_snapshot!(render_all("sku: small\neula: true\n"));
}

/// The specs whose StatefulSets are recorded in `pod-templates.json`.
const RECORDED_SPECS: [(&str, &str); 4] = [
    ("vanilla", "sku: small\neula: true\n"),
    (
        "paper",
        "sku: small\neula: true\ntype: PAPER\nversion: 1.20.4\nmotd: Hello\nmaxPlayers: 12\n\
         properties: {difficulty: hard, pvp: 'false'}\nwhitelist: [Notch]\nops: [Notch]\njvmArgs: ['-XX:+UseG1GC']\n",
    ),
    ("stopped", "sku: small\neula: true\nversion: 1.12.2\nstate: Stopped\n"),
    ("hostname", "sku: small\neula: true\nversion: 26.1\nhostname: mc.example.com\nservice: {type: LoadBalancer}\n"),
];

/// An upgrade must not restart running servers: for an unchanged spec the
/// StatefulSet's spec (its pod template above all, where any change rolls
/// the pod) is what the recorded release rendered. The record
/// (`src/resources/testdata/pod-templates.json`, from main at 5d8b7d8, before
/// the RCON Service was dropped) is rewritten only on purpose, with
/// `CRAFTPLANE_RECORD_POD_TEMPLATES=1`, for a change that must restart
/// servers and says so in the CHANGELOG.
#[test]
fn an_unchanged_spec_keeps_its_statefulset_across_releases() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/resources/testdata/pod-templates.json");
    let now: BTreeMap<&str, serde_json::Value> = RECORDED_SPECS
        .iter()
        .map(|(name, yaml)| {
            let m = validate(&server("survival", yaml), Some(&sku("small")), None, Some("small")).expect("valid");
            (*name, serde_json::to_value(statefulset::build(&m).spec).unwrap())
        })
        .collect();
    if std::env::var_os("CRAFTPLANE_RECORD_POD_TEMPLATES").is_some() {
        std::fs::write(&path, serde_json::to_string_pretty(&now).unwrap() + "\n").unwrap();
    }
    let recorded: BTreeMap<String, serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(recorded.len(), now.len(), "specs recorded: {:?}", recorded.keys());
    for (name, spec) in &now {
        assert_eq!(
            Some(spec),
            recorded.get(*name),
            "the StatefulSet of spec {name:?} differs from the recorded release's: running servers would restart"
        );
    }
}

/// Live settings never touch the pod template: a running server takes
/// them over RCON, so a change of them must not roll its pod.
#[test]
fn live_settings_leave_the_pod_template_alone() {
    let template = |yaml: &str, kept: Option<(bool, bool)>| {
        let mut m = validate(&server("s", yaml), Some(&sku("small")), None, Some("small")).unwrap();
        if let Some((w, o)) = kept {
            m.keep_list_env(w, o);
        }
        (statefulset::build(&m).spec.unwrap().template, statefulset::config_hash(&m))
    };
    let base = "sku: small\neula: true\n";
    let listed = template(&format!("{base}whitelist: [alice]\nops: [alice]\n"), None);
    for changed in [
        "whitelist: [alice, bob]\nops: [bob]\n",
        "whitelist: [alice]\nops: [alice]\ndifficulty: hard\ngameRules: {keepInventory: 'true'}\n",
        "difficulty: peaceful\n",
    ] {
        assert_eq!(template(&format!("{base}{changed}"), Some((true, true))), listed, "{changed}");
    }
    // A server created without lists keeps its template when they appear.
    let bare = template(base, None);
    assert_eq!(template(&format!("{base}whitelist: [alice]\nops: [bob]\n"), Some((false, false))), bare);
    // ...and what needs a restart still changes it.
    assert_ne!(template(&format!("{base}motd: other\n"), Some((false, false))), bare);
}

#[test]
fn snapshot_paper_with_properties() {
    insta::assert_snapshot!(render_all(
        "sku: small\neula: true\ntype: PAPER\nversion: 1.20.4\nmotd: Hello\nmaxPlayers: 12\n\
         properties: {difficulty: hard, pvp: 'false', spawn-protection: '0'}\n\
         whitelist: [Notch, jeb_]\nops: [Notch]\njvmArgs: ['-XX:+UseG1GC']\n\
         gracefulStop: {timeoutSeconds: 90, warning: Restarting soon}\n"
    ));
}

#[test]
fn snapshot_stopped() {
    insta::assert_snapshot!(render_all("sku: small\neula: true\nversion: 1.12.2\nstate: Stopped\n"));
}

#[test]
fn snapshot_custom_service() {
    insta::assert_snapshot!(render_all(
        "sku: small\neula: true\nversion: 26.1\nhostname: mc.example.com\n\
         service: {type: LoadBalancer, port: 25570, nodePort: 31000, loadBalancerClass: metallb, \
         annotations: {metallb.universe.tf/address-pool: games}}\n\
         storage: {size: 3Gi, storageClassName: fast}\n"
    ));
}

#[test]
fn spec_properties_override_sku_defaults() {
    let s = server("a", "sku: small\neula: true\nproperties: {difficulty: hard}\n");
    let m = validate(&s, Some(&sku("small")), None, None).unwrap();
    assert_eq!(m.properties.get("difficulty").map(String::as_str), Some("hard"));
    assert_eq!(m.properties.get("view-distance").map(String::as_str), Some("8"));
}

#[test]
fn managed_keys_from_the_sku_are_dropped() {
    let s = server("a", "sku: small\neula: true\n");
    let mut k = sku("small");
    k.spec.default_properties.insert("rcon.password".into(), "leak".into());
    let m = validate(&s, Some(&k), None, None).unwrap();
    assert!(!m.properties.contains_key("rcon.password"));
}

#[test]
fn heap_follows_the_sku() {
    let s = server("a", "sku: small\neula: true\n");
    let m = validate(&s, Some(&sku("small")), None, None).unwrap();
    assert_eq!(m.heap_mb, 1536); // 75% of 2Gi
    let mut k = sku("small");
    k.spec.jvm = Some(crate::api::sku::JvmSpec { heap: Some("1G".into()), heap_percent: None });
    assert_eq!(validate(&s, Some(&k), None, None).unwrap().heap_mb, 953); // 1e9 bytes
    k.spec.jvm = Some(crate::api::sku::JvmSpec { heap: Some("2Gi".into()), heap_percent: None });
    let err = validate(&s, Some(&k), None, None).unwrap_err();
    assert_eq!(err.reason(), "InvalidSku");
    assert!(err.to_string().contains("OOM"), "{err}");
}

#[test]
fn sku_rules_become_typed_errors() {
    let s = server("a", "sku: small\neula: true\nmaxPlayers: 50\n");
    let e = validate(&s, Some(&sku("small")), None, None).unwrap_err();
    assert_eq!(e, InvalidSpec::MaxPlayersExceedsSku { requested: 50, limit: 20 });

    let s = server("a", "sku: small\neula: true\nstorage: {size: 50Gi}\n");
    assert_eq!(validate(&s, Some(&sku("small")), None, None).unwrap_err().reason(), "StorageExceedsSku");

    let s = server("a", "sku: small\neula: true\ntype: FORGE\n");
    let mut k = sku("small");
    k.spec.allowed_server_types = vec![ServerType::Paper, ServerType::Vanilla];
    let e = validate(&s, Some(&k), None, None).unwrap_err();
    assert_eq!(e.reason(), "ServerTypeNotAllowed");
    assert!(e.to_string().contains("PAPER, VANILLA"), "{e}");

    assert_eq!(validate(&s, None, None, None).unwrap_err(), InvalidSpec::SkuNotFound("small".into()));

    let s = server("a", "sku: small\neula: true\n");
    let mut k = sku("small");
    k.spec.available = false;
    assert_eq!(validate(&s, Some(&k), None, None).unwrap_err().reason(), "SkuUnavailable");
    // An existing server keeps running on an unavailable SKU.
    assert!(validate(&s, Some(&k), None, Some("small")).is_ok());

    let s = server("a", "sku: small\neula: true\nproperties: {motd-extra: \"a\\nb\"}\n");
    assert_eq!(validate(&s, Some(&sku("small")), None, None).unwrap_err().reason(), "InvalidSpec");
}

/// A LATEST server runs the version LATEST was resolved to: the image's
/// Java and its VERSION follow it (the image would otherwise download
/// whatever is newest at each start).
#[test]
fn a_resolved_latest_runs_that_version() {
    let s = server("a", "sku: small\neula: true\n");
    assert_eq!(s.spec.version, "LATEST");
    let mut m = validate(&s, Some(&sku("small")), None, None).unwrap();
    m.set_version("1.20.4".into(), true);
    assert_eq!(m.image, image::default_image("1.20.4"));
    assert!(m.image.ends_with("-java17"), "{}", m.image);
    let sts = statefulset::build(&m);
    let c = &sts.spec.unwrap().template.spec.unwrap().containers[0];
    let version = c.env.iter().flatten().find(|e| e.name == "VERSION").and_then(|e| e.value.clone());
    assert_eq!(version.as_deref(), Some("1.20.4"));
    // spec.image stays as given.
    let mut m = validate(&s, Some(&sku("small")), None, None).unwrap();
    m.image = "example.com/mc:custom".into();
    m.set_version("1.20.4".into(), false);
    assert_eq!(m.image, "example.com/mc:custom");
}

#[test]
fn motd_with_control_characters_is_refused() {
    let v = |motd: &str| {
        let mut s = server("a", "sku: small\neula: true\n");
        s.spec.motd = Some(motd.into());
        validate(&s, Some(&sku("small")), None, None)
    };
    for bad in ["line one\nline two", "a\rb", "tab\there", "\u{1b}[31mred", "nul\0", "c1\u{85}next line"] {
        let err = v(bad).unwrap_err();
        assert_eq!(err.reason(), "InvalidSpec", "{bad:?}");
        assert!(err.to_string().contains("motd"), "{err}");
    }
    // The escape the image turns into a second line, formatting codes and
    // other Unicode are fine.
    for good in ["Line one\\nLine two", "A §l§cMinecraft§r server", "Grüße ☃"] {
        assert_eq!(v(good).unwrap().motd.as_deref(), Some(good));
    }
}

#[test]
fn config_hash_changes_with_config_but_not_with_whitelist_members() {
    let base = "sku: small\neula: true\nwhitelist: [Notch]\n";
    let h =
        |yaml: &str| statefulset::config_hash(&validate(&server("a", yaml), Some(&sku("small")), None, None).unwrap());
    let h0 = h(base);
    assert_eq!(h0, h(base), "deterministic");
    assert_ne!(h0, h(&format!("{base}properties: {{pvp: 'false'}}\n")), "a property rolls the pod");
    assert_ne!(h0, h(&format!("{base}motd: hi\n")), "the motd rolls the pod");
    assert_eq!(
        h0,
        h("sku: small\neula: true\nwhitelist: [Notch, jeb_]\n"),
        "whitelist members do not restart the server"
    );
    assert_ne!(h0, h("sku: small\neula: true\n"), "turning the whitelist off rolls the pod");
}

#[test]
fn grace_period_covers_the_stop() {
    let m = validate(&server("a", "sku: small\neula: true\n"), Some(&sku("small")), None, None).unwrap();
    assert_eq!(statefulset::stop_budget(&m), (105, 0));
    let sts = statefulset::build(&m);
    let pod = sts.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.termination_grace_period_seconds, Some(120));
    let m = validate(
        &server("a", "sku: small\neula: true\ngracefulStop: {timeoutSeconds: 60, warning: bye}\n"),
        Some(&sku("small")),
        None,
        None,
    )
    .unwrap();
    let (stop, announce) = statefulset::stop_budget(&m);
    assert_eq!((stop, announce), (38, 10));
    assert!(stop + announce < 60);
    for t in 10..=200 {
        let m = validate(
            &server("a", &format!("sku: small\neula: true\ngracefulStop: {{timeoutSeconds: {t}, warning: bye}}\n")),
            Some(&sku("small")),
            None,
            None,
        )
        .unwrap();
        let (stop, announce) = statefulset::stop_budget(&m);
        assert!(stop >= 1 && stop + announce < t, "t={t}: stop {stop} + announce {announce}");
    }
}

mod properties_of_any_accepted_spec {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::super::testdata::sku;
    use super::super::*;
    use crate::api::server::*;

    fn server_type() -> impl Strategy<Value = ServerType> {
        prop_oneof![
            Just(ServerType::Vanilla),
            Just(ServerType::Paper),
            Just(ServerType::Purpur),
            Just(ServerType::Folia),
            Just(ServerType::Spigot),
            Just(ServerType::Bukkit),
            Just(ServerType::Fabric),
            Just(ServerType::Quilt),
            Just(ServerType::Forge),
            Just(ServerType::NeoForge),
        ]
    }

    fn version() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("LATEST".to_string()),
            Just("SNAPSHOT".to_string()),
            (0u32..40, 0u32..40, proptest::option::of(0u32..20)).prop_map(|(a, b, c)| match c {
                Some(c) => format!("{a}.{b}.{c}"),
                None => format!("{a}.{b}"),
            }),
            "[0-9]{2}w[0-9]{2}[a-z]",
        ]
    }

    fn spec() -> impl Strategy<Value = MinecraftServerSpec> {
        (
            server_type(),
            version(),
            any::<bool>(),
            proptest::collection::btree_map("[a-z0-9][a-z0-9.-]{0,20}", "[ -~]{0,40}", 0..8),
            proptest::option::of("[ -~]{0,100}"),
            proptest::option::of(1i32..=10000),
            proptest::collection::vec("[A-Za-z0-9_]{3,16}", 0..5),
            proptest::collection::vec("-[A-Za-z0-9:+=.]{1,20}", 0..4),
            (proptest::option::of(10i32..=3600), proptest::option::of("[ -~]{0,50}")),
            (0usize..4, 1i32..=65535, proptest::option::of(30000i32..=32767)),
            proptest::option::of((1u32..10, proptest::option::of("[a-z]{1,10}"))),
            proptest::option::of("[a-z]{1,10}(\\.[a-z]{1,10}){0,2}"),
        )
            .prop_map(
                |(
                    t,
                    version,
                    stopped,
                    properties,
                    motd,
                    max_players,
                    whitelist,
                    jvm_args,
                    stop,
                    svc,
                    storage,
                    hostname,
                )| {
                    let service_type = [
                        ServiceType::Headless,
                        ServiceType::ClusterIP,
                        ServiceType::NodePort,
                        ServiceType::LoadBalancer,
                    ][svc.0];
                    MinecraftServerSpec {
                        sku: "small".into(),
                        eula: true,
                        server_type: t,
                        version,
                        state: if stopped { ServerState::Stopped } else { ServerState::Running },
                        properties,
                        motd,
                        max_players,
                        whitelist: whitelist.clone(),
                        ops: whitelist,
                        difficulty: None,
                        game_rules: BTreeMap::new(),
                        jvm_args,
                        image: None,
                        service: Some(ServiceSpec {
                            service_type,
                            port: svc.1,
                            node_port: if matches!(service_type, ServiceType::Headless | ServiceType::ClusterIP) {
                                None
                            } else {
                                svc.2
                            },
                            annotations: BTreeMap::new(),
                            load_balancer_class: None,
                        }),
                        storage: storage.map(|(gi, class)| StorageSpec {
                            size: Some(crate::api::Quantity::new(format!("{gi}Gi"))),
                            storage_class_name: class,
                        }),
                        backup: None,
                        tasks: vec![],
                        restore: None,
                        graceful_stop: stop
                            .0
                            .map(|timeout_seconds| GracefulStop { timeout_seconds, warning: stop.1.clone() }),
                        deletion_policy: DeletionPolicy::Retain,
                        hostnames: hostname.iter().map(|h| format!("play.{h}")).collect(),
                        hostname,
                        sleep: None,
                    }
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn any_accepted_spec_validates_or_errors_and_renders(spec in spec()) {
            let mut s = MinecraftServer::new("prop", spec);
            s.metadata.namespace = Some("ns".into());
            s.metadata.uid = Some("uid".into());
            match validate(&s, Some(&sku("small")), None, None) {
                Ok(m) => {
                    let sts = statefulset::build(&m);
                    let cm = config_map::build(&m);
                    let _ = (pvc::build(&m, true), service::game(&m), secret::build(&m, "pw"));
                    let pod = sts.spec.unwrap().template.spec.unwrap();
                    // The grace period always covers the image's stop duration.
                    let (stop, announce) = statefulset::stop_budget(&m);
                    prop_assert!(i64::from(stop + announce) < pod.termination_grace_period_seconds.unwrap());
                    // The rendered server.properties is exactly the SKU's
                    // defaults overridden by the spec's properties (computed
                    // here from the input, not from the model), managed keys
                    // left out, plus the live settings' own lines (the
                    // whitelist switch, and the difficulty when set).
                    let rendered = &cm.data.unwrap()[config_map::PROPERTIES_KEY];
                    let parsed: BTreeMap<String, String> = rendered
                        .lines()
                        .map(|l| {
                            let (k, v) = l.split_once('=').expect("name=value line");
                            (k.to_string(), v.to_string())
                        })
                        .collect();
                    prop_assert_eq!(parsed.len(), rendered.lines().count(), "no key twice");
                    let mut want = sku("small").spec.default_properties;
                    want.extend(s.spec.properties.clone());
                    want.retain(|k, _| !crate::api::server::RESERVED_PROPERTIES.contains(&k.as_str()));
                    let on = (!s.spec.whitelist.is_empty()).to_string();
                    want.insert("white-list".into(), on.clone());
                    want.insert("enforce-whitelist".into(), on);
                    if let Some(d) = s.spec.difficulty {
                        want.insert("difficulty".into(), d.as_str().into());
                    }
                    prop_assert_eq!(parsed, want);
                }
                Err(e) => {
                    // Only SKU limits can refuse a schema-valid spec here.
                    prop_assert!(matches!(e.reason(), "MaxPlayersExceedsSku" | "StorageExceedsSku" | "StorageClassNotAllowed"), "{e}");
                }
            }
        }
    }
}

#[test]
fn a_tenant_limits_the_skus_of_new_servers() {
    let t = tenant_allowing(&["medium"]);
    let s = server("a", "sku: small\neula: true\n");
    let e = validate(&s, Some(&sku("small")), Some(&t), None).unwrap_err();
    assert_eq!(e.reason(), "SkuNotAllowed");
    assert!(e.to_string().contains("acme") && e.to_string().contains("medium"), "{e}");
    // An existing server keeps running when its SKU is withdrawn.
    assert!(validate(&s, Some(&sku("small")), Some(&t), Some("small")).is_ok());
    let mut open = t.clone();
    open.spec.allowed_skus.clear();
    assert!(validate(&s, Some(&sku("small")), Some(&open), None).is_ok(), "an empty list allows every SKU");
}

/// A SKU's placement puts the server pod on the admin's node pool, and the
/// server's backup/restore Jobs beside it.
#[test]
fn sku_placement_reaches_the_pod_and_the_jobs() {
    let mut k = sku("small");
    k.spec.placement = Some(crate::api::sku::Placement {
        node_selector: BTreeMap::from([("pool".into(), "games".into())]),
        tolerations: vec![k8s_openapi::api::core::v1::Toleration {
            key: Some("games".into()),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Default::default()
        }],
    });
    let s = server("survival", "sku: small\neula: true\n");
    let m = validate(&s, Some(&k), None, None).expect("valid");
    let sts = serde_json::to_value(statefulset::build(&m)).unwrap();
    let pod = &sts["spec"]["template"]["spec"];
    assert_eq!(pod["nodeSelector"]["pool"], "games");
    assert_eq!(pod["tolerations"][0]["key"], "games");
    let job = serde_json::to_value(backup_job::build(&backup_job::JobInput {
        name: "j".into(),
        namespace: "n".into(),
        server: "survival".into(),
        owner: Default::default(),
        snapshot: "s".into(),
        location: "s3://b/x".into(),
        image: "i".into(),
        settings: BTreeMap::new(),
        credentials: None,
        node: None,
        placement: m.placement.clone(),
        task: backup_job::Task::Restore,
    }))
    .unwrap();
    let jp = &job["spec"]["template"]["spec"];
    assert_eq!(jp["nodeSelector"]["pool"], "games");
    assert_eq!(jp["tolerations"][0]["effect"], "NoSchedule");
    // Without placement, neither is set (pods go wherever the scheduler puts them).
    let plain =
        serde_json::to_value(statefulset::build(&validate(&s, Some(&sku("small")), None, None).unwrap())).unwrap();
    assert!(plain["spec"]["template"]["spec"].get("nodeSelector").is_none());
}

/// The operator image holds its binary at `/craftplane` (a file: see
/// `cargo xtask images`); a volume mounted under it cannot be created, so
/// the init-container never started on a real node.
#[test]
fn helper_containers_mount_nothing_under_the_binary_path() {
    let s = server("survival", "sku: small\neula: true\n");
    let m = validate(&s, Some(&sku("small")), None, None).expect("valid");
    let sts = statefulset::build(&m);
    let pod = sts.spec.unwrap().template.spec.unwrap();
    let mounts: Vec<String> = pod
        .init_containers
        .unwrap_or_default()
        .iter()
        .flat_map(|c| c.volume_mounts.clone().unwrap_or_default())
        .map(|v| v.mount_path)
        .collect();
    assert!(!mounts.is_empty());
    for p in mounts {
        assert!(p != "/craftplane" && !p.starts_with("/craftplane/"), "mount {p} under the image's binary /craftplane");
    }
    assert!(!crate::api::contract::CONFIG_ROOT.starts_with("/craftplane/"));
}

#[test]
fn spec_image_must_be_allowed_by_the_sku_or_the_tenant() {
    use crate::api::tenant::{Tenant, TenantSpec};
    let s = server("a", "sku: small\neula: true\nimage: xmrig/xmrig:latest\n");
    let e = validate(&s, Some(&sku("small")), None, None).unwrap_err();
    assert_eq!(e.reason(), "ImageNotAllowed");
    assert!(e.to_string().contains("only the image craftplane chooses"), "{e}");
    // Also for a server that already runs: its image is not started again.
    assert_eq!(validate(&s, Some(&sku("small")), None, Some("small")).unwrap_err().reason(), "ImageNotAllowed");
    let mut open = sku("small");
    open.spec.allowed_images = vec!["xmrig/".into()];
    assert_eq!(validate(&s, Some(&open), None, None).unwrap().image, "xmrig/xmrig:latest");
    let tenant = |images: &[&str]| -> Tenant {
        let spec: TenantSpec =
            serde_json::from_value(serde_json::json!({"owners": [], "allowedImages": images})).unwrap();
        Tenant::new("acme", spec)
    };
    let t = tenant(&["xmrig/xmrig"]);
    assert!(validate(&s, Some(&sku("small")), Some(&t), None).is_ok(), "the tenant's list allows it too");
    let other = tenant(&["ghcr.io/acme/"]);
    let e = validate(&s, Some(&sku("small")), Some(&other), None).unwrap_err();
    assert!(e.to_string().contains("ghcr.io/acme/"), "{e}");
    // No spec.image: the image craftplane chooses, always.
    let plain = server("b", "sku: small\neula: true\n");
    assert!(validate(&plain, Some(&sku("small")), None, None).unwrap().image.starts_with("itzg/minecraft-server:"));
}

/// A server already running keeps a SKU that was withdrawn (unavailable or
/// no longer allowed), but is never moved to such a SKU: the rules apply to
/// every change of `spec.sku`, not only to new servers.
#[test]
fn a_running_server_is_not_moved_to_a_forbidden_or_unavailable_sku() {
    let t = tenant_allowing(&["small"]);
    let moved = server("a", "sku: large\neula: true\n");
    let large = sku("large");
    let e = validate(&moved, Some(&large), Some(&t), Some("small")).unwrap_err();
    assert_eq!(e.reason(), "SkuNotAllowed", "{e}");
    let mut retired = sku("large");
    retired.spec.available = false;
    let e = validate(&moved, Some(&retired), None, Some("small")).unwrap_err();
    assert_eq!(e.reason(), "SkuUnavailable", "{e}");
    // Staying on it is fine.
    assert!(validate(&moved, Some(&retired), None, Some("large")).is_ok());
    let mut open = t.clone();
    open.spec.allowed_skus = vec!["large".into(), "small".into()];
    assert_eq!(validate(&moved, Some(&large), Some(&open), Some("small")).unwrap().sku, "large");
}

#[test]
fn only_the_skus_storage_classes_may_be_named() {
    let s = server("a", "sku: small\neula: true\nstorage: {storageClassName: premium}\n");
    let e = validate(&s, Some(&sku("small")), None, None).unwrap_err();
    assert_eq!(e.reason(), "StorageClassNotAllowed");
    assert!(e.to_string().contains("premium") && e.to_string().contains("leave storage.storageClassName unset"), "{e}");
    let mut k = sku("small");
    k.spec.storage_class_name = Some("standard".into());
    let e = validate(&s, Some(&k), None, Some("small")).unwrap_err();
    assert!(e.to_string().contains("allowed: standard"), "{e}");
    k.spec.allowed_storage_classes = vec!["premium".into()];
    assert_eq!(validate(&s, Some(&k), None, None).unwrap().storage_class.as_deref(), Some("premium"));
    let own = server("a", "sku: small\neula: true\nstorage: {storageClassName: standard}\n");
    assert_eq!(validate(&own, Some(&k), None, None).unwrap().storage_class.as_deref(), Some("standard"));
    let unset = server("a", "sku: small\neula: true\n");
    assert_eq!(validate(&unset, Some(&k), None, None).unwrap().storage_class.as_deref(), Some("standard"));
}

#[test]
fn service_annotations_the_sku_does_not_allow_are_left_out() {
    let s = server(
        "a",
        "sku: small\neula: true\nservice: {annotations: {metallb.universe.tf/address-pool: vip, example.com/team: x}}\n",
    );
    let mut k = sku("small");
    k.spec.allowed_service_annotations = vec!["example.com/team".into()];
    let m = validate(&s, Some(&k), None, None).unwrap();
    assert_eq!(m.refused_annotations, ["metallb.universe.tf/address-pool"]);
    let svc = service::game(&m);
    let a = svc.metadata.annotations.unwrap();
    assert_eq!(a.keys().collect::<Vec<_>>(), ["example.com/team"]);
}

/// Tenant `acme` (owner alice) allowed only `skus`.
fn tenant_allowing(skus: &[&str]) -> crate::api::tenant::Tenant {
    use crate::api::tenant::{Subject, SubjectKind, Tenant, TenantSpec};
    Tenant::new(
        "acme",
        TenantSpec {
            owners: vec![Subject { kind: SubjectKind::User, name: "alice".into(), namespace: None }],
            members: vec![],
            namespaces: vec![],
            quota: None,
            allowed_skus: skus.iter().map(|s| s.to_string()).collect(),
            allowed_images: vec![],
            network: None,
            gateway: None,
            backup_store: None,
            hostname_domains: vec![],
            allowed_backup_stores: vec![],
            keep_retained_archives: false,
        },
    )
}

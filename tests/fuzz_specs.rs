//! Bad input: generated MinecraftServer, Tenant, PluginInstallation and
//! BackupSnapshot specs — mostly plausible, often wrong in type or value.
//! 10,000 go through deserialization and every builder (never a panic);
//! 500 go to the real API server (dry run): what it accepts must
//! deserialize into our types and build, what it refuses is counted.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use craftplane::api::{BackupSnapshot, MinecraftServer, PluginInstallation, Sku, Tenant};
use craftplane::resources::backup_job::{self, JobInput, Task};
use craftplane::resources::{self, config_map, pvc, secret, service, statefulset};
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};

/// A value of the wrong kind, or an edge of the right kind.
fn garbage() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1e12f64..1e12).prop_map(Value::from),
        "[ -~]{0,40}".prop_map(Value::from),
        "\\PC{0,20}".prop_map(Value::from),
        Just(json!([])),
        Just(json!({})),
        Just(Value::from("x".repeat(5000))),
        prop::collection::vec(any::<i32>(), 0..3).prop_map(|v| json!(v)),
    ]
    .boxed()
}

thread_local! {
    /// Weight of garbage per field when strategies are built (0: none).
    static GARBAGE: std::cell::Cell<u32> = const { std::cell::Cell::new(1) };
}

/// Mostly `valid`, sometimes garbage, sometimes absent.
fn field(valid: BoxedStrategy<Value>) -> BoxedStrategy<Option<Value>> {
    match GARBAGE.with(|g| g.get()) {
        0 => prop_oneof![2 => Just(None), 8 => valid.prop_map(Some)].boxed(),
        g => prop_oneof![2 => Just(None), 8 => valid.prop_map(Some), g => garbage().prop_map(Some)].boxed(),
    }
}

/// One of `valid`, or (when garbage is on) one of `wrong` as well.
fn pick2(valid: &'static [&'static str], wrong: &'static [&'static str]) -> BoxedStrategy<Value> {
    let clean = GARBAGE.with(|g| g.get()) == 0;
    let items: Vec<&'static str> = if clean { valid.to_vec() } else { valid.iter().chain(wrong).copied().collect() };
    prop::sample::select(items).prop_map(Value::from).boxed()
}

/// A required field: always present when garbage is off.
fn req(valid: BoxedStrategy<Value>) -> BoxedStrategy<Option<Value>> {
    if GARBAGE.with(|g| g.get()) == 0 { valid.prop_map(Some).boxed() } else { field(valid) }
}

fn quantity() -> BoxedStrategy<Value> {
    prop_oneof![
        pick2(&["1", "500m", "2Gi", "5Gi", "100Mi", "0", "1e3"], &["-1", "4GB", "", "Gi", "99999999999Ti"]),
        (0u32..100000).prop_map(Value::from),
    ]
    .boxed()
}

fn object(fields: Vec<(&'static str, Option<Value>)>) -> Value {
    Value::Object(fields.into_iter().filter_map(|(k, v)| Some((k.to_string(), v?))).collect())
}

/// An integer in `valid`, or (garbage on) in `wide`.
fn int(valid: std::ops::Range<i64>, wide: std::ops::Range<i64>) -> BoxedStrategy<Value> {
    if GARBAGE.with(|g| g.get()) == 0 {
        valid.prop_map(Value::from).boxed()
    } else {
        wide.prop_map(Value::from).boxed()
    }
}

fn server_spec() -> BoxedStrategy<Value> {
    let a = (
        req(pick2(&["small"], &["missing", "", "Small"])),
        req(if GARBAGE.with(|g| g.get()) == 0 {
            Just(json!(true)).boxed()
        } else {
            prop_oneof![Just(json!(true)), Just(json!(false))].boxed()
        }),
        field(pick2(
            &["VANILLA", "PAPER", "PURPUR", "FOLIA", "SPIGOT", "BUKKIT", "FABRIC", "QUILT", "FORGE", "NEOFORGE"],
            &["paper", "X"],
        )),
        req(pick2(&["1.21.4", "1.20.1", "1.8.8", "26.1", "1.21.4-pre1"], &["latest", "", "../../x"])),
        field(pick2(&["Running", "Stopped"], &["Paused"])),
        field(int(1..200, -5..200)),
        field("\\PC{0,80}".prop_map(Value::from).boxed()),
        field(
            prop::collection::btree_map(
                "[a-z.-]{1,20}",
                if GARBAGE.with(|g| g.get()) == 0 {
                    "[a-z0-9]{0,20}".prop_map(Value::from).boxed()
                } else {
                    prop_oneof!["[ -~]{0,20}".prop_map(Value::from), garbage()].boxed()
                },
                0..5,
            )
            .prop_map(|m| json!(m))
            .boxed(),
        ),
    );
    let b = (
        field(
            prop::collection::vec(
                if GARBAGE.with(|g| g.get()) == 0 { "[A-Za-z0-9_]{3,16}" } else { "[A-Za-z0-9_]{0,20}" },
                0..4,
            )
            .prop_map(|v| json!(v))
            .boxed(),
        ),
        field(
            prop::collection::vec(if GARBAGE.with(|g| g.get()) == 0 { "-[ -~]{0,30}" } else { "[ -~]{0,30}" }, 0..4)
                .prop_map(|v| json!(v))
                .boxed(),
        ),
        field(
            (field(quantity()), field(pick2(&["standard", "fast"], &[""])))
                .prop_map(|(s, c)| object(vec![("size", s), ("storageClassName", c)]))
                .boxed(),
        ),
        field(
            (
                field(pick2(&["LoadBalancer", "NodePort", "ClusterIP", "Headless"], &["Internal"])),
                field(int(1..65536, -1..70000)),
            )
                .prop_map(|(t, p)| object(vec![("type", t), ("port", p)]))
                .boxed(),
        ),
        field(
            (
                req(pick2(&["0 4 * * *", "@daily", "*/5 * * * * *", "61 * * * *"], &["daily", "* * *"])),
                field((0i64..20).prop_map(|n| json!({"keepLast": n, "maxAge": "720h"})).boxed()),
            )
                .prop_map(|(s, r)| object(vec![("schedule", s), ("retention", r)]))
                .boxed(),
        ),
        field(pick2(&["Delete", "Retain"], &["Keep"])),
        field(pick2(&["mc.example.com"], &["", "-bad-", "UPPER.example"])),
        field(
            (field(int(10..3601, -10..4000)), field("[ -~]{0,300}".prop_map(Value::from).boxed()))
                .prop_map(|(t, w)| object(vec![("timeoutSeconds", t), ("warning", w)]))
                .boxed(),
        ),
    );
    (a, b)
        .prop_map(
            |((sku, eula, ty, version, state, max, motd, props), (wl, jvm, storage, svc, backup, del, host, stop))| {
                object(vec![
                    ("sku", sku),
                    ("eula", eula),
                    ("type", ty),
                    ("version", version),
                    ("state", state),
                    ("maxPlayers", max),
                    ("motd", motd),
                    ("properties", props),
                    ("whitelist", wl),
                    ("jvmArgs", jvm),
                    ("storage", storage),
                    ("service", svc),
                    ("backup", backup),
                    ("deletionPolicy", del),
                    ("hostname", host),
                    ("gracefulStop", stop),
                ])
            },
        )
        .boxed()
}

fn tenant_spec() -> BoxedStrategy<Value> {
    (
        req(prop::collection::vec(
            (pick2(&["User", "Group", "ServiceAccount"], &["Robot"]), "[a-z][a-z0-9@.:-]{0,20}").prop_map(|(k, n)| {
                if k == "ServiceAccount" {
                    json!({"kind": k, "name": n, "namespace": "ns"})
                } else {
                    json!({"kind": k, "name": n})
                }
            }),
            if GARBAGE.with(|g| g.get()) == 0 { 1..3 } else { 0..3 },
        )
        .prop_map(|v| json!(v))
        .boxed()),
        field(prop::collection::vec("[a-z][a-z0-9]{0,20}", 0..3).prop_map(|v| json!(v)).boxed()),
        field(
            (field(int(0..50, -3..50)), field(quantity()), field(quantity()), field(quantity()))
                .prop_map(|(n, c, m, s)| object(vec![("maxServers", n), ("cpu", c), ("memory", m), ("storage", s)]))
                .boxed(),
        ),
        field(
            prop::collection::btree_set(
                pick2(&["small", "medium"], &["*", ""]).prop_map(|v| v.as_str().unwrap_or("").to_string()),
                0..3,
            )
            .prop_map(|v| json!(v))
            .boxed(),
        ),
        field(
            prop::collection::vec(pick2(&["203.0.113.0/24", "::/0"], &["10.0.0.0/33", "nope"]), 0..3)
                .prop_map(|v| json!({"allowedIngressCidrs": v}))
                .boxed(),
        ),
        field(pick2(&["main"], &["", "Bad_Name"]).prop_map(|n| json!({"name": n, "prefix": "tenants/x/"})).boxed()),
        field(
            prop::collection::vec(pick2(&["example.com", "Games.Example.NET."], &["", "-bad", "a..b"]), 0..3)
                .prop_map(|v| json!(v))
                .boxed(),
        ),
    )
        .prop_map(|(o, n, q, s, net, b, h)| {
            object(vec![
                ("owners", o),
                ("namespaces", n),
                ("quota", q),
                ("allowedSkus", s),
                ("network", net),
                ("backupStore", b),
                ("hostnameDomains", h),
            ])
        })
        .boxed()
}

fn plugin_spec() -> BoxedStrategy<Value> {
    let clean = GARBAGE.with(|g| g.get()) == 0;
    let url = (
        pick2(
            &["https://x.example/A.jar", "http://x.example/dl", "https://x.example/%2e%2e/a.jar"],
            &["ftp://x/a.jar", "not a url"],
        ),
        field(prop_oneof!["[a-f0-9]{64}".prop_map(Value::from), "[a-fA-F0-9]{10,70}".prop_map(Value::from)].boxed()),
        field("[a-f0-9]{128}".prop_map(Value::from).boxed()),
        "[a-f0-9]{64}",
    )
        .prop_map(move |(u, s256, s512, good)| {
            if clean {
                json!({"url": u, "sha256": good})
            } else {
                object(vec![("url", Some(u)), ("sha256", s256), ("sha512", s512)])
            }
        });
    let modrinth = (pick2(&["luckperms", "fabric-api"], &["", "a/b"]), field(pick2(&["1.0", "v5.5.71-bukkit"], &[""])))
        .prop_map(|(p, v)| object(vec![("project", Some(p)), ("version", v)]));
    (
        req(pick2(&["mc", "other"], &[""])),
        req(if GARBAGE.with(|g| g.get()) == 0 {
            prop_oneof![url.prop_map(|u| json!({"url": u})), modrinth.prop_map(|m| json!({"modrinth": m}))].boxed()
        } else {
            (field(url.boxed()), field(modrinth.boxed()))
                .prop_map(|(u, m)| object(vec![("url", u), ("modrinth", m)]))
                .boxed()
        }),
        field(pick2(&["cfg"], &[""]).prop_map(|n| json!({"name": n})).boxed()),
        field(pick2(&["LuckPerms"], &["..", "a/b", ""])),
        field(prop_oneof![Just(json!(true)), Just(json!(false))].boxed()),
        field(pick2(&["Install", "Require"], &["Maybe"])),
    )
        .prop_map(|(s, src, cfg, dir, en, pol)| {
            object(vec![
                ("server", s),
                ("source", src),
                ("configFiles", cfg),
                ("configDirectory", dir),
                ("enabled", en),
                ("dependencyPolicy", pol),
            ])
        })
        .boxed()
}

fn backup_spec() -> BoxedStrategy<Value> {
    (
        req(pick2(&["mc"], &[""])),
        field(pick2(&["main"], &["Bad", ""]).prop_map(|n| json!({"name": n})).boxed()),
        field(pick2(&["zstd", "gzip", "none"], &["lz4"])),
        field(
            prop::collection::vec(pick2(&["world", "logs"], &["/etc", "a/../b", ""]), 0..3)
                .prop_map(|v| json!(v))
                .boxed(),
        ),
        field(prop::collection::vec(pick2(&["logs", "cache"], &[".."]), 0..3).prop_map(|v| json!(v)).boxed()),
        field(prop_oneof![Just(json!(true)), Just(json!(false))].boxed()),
        field(pick2(&["Manual", "Scheduled", "PreUpgrade", "PreDelete"], &["Because"])),
    )
        .prop_map(|(s, st, c, i, e, r, why)| {
            object(vec![
                ("server", s),
                ("store", st),
                ("compression", c),
                ("include", i),
                ("exclude", e),
                ("retain", r),
                ("reason", why),
            ])
        })
        .boxed()
}

fn wrap(kind: &str, spec: Value, ns: Option<&str>, name: &str) -> Value {
    let mut meta = json!({"name": name, "uid": "00000000-0000-0000-0000-000000000001", "generation": 1});
    if let Some(ns) = ns {
        meta["namespace"] = json!(ns);
    }
    json!({"apiVersion": "craftplane.io/v1alpha1", "kind": kind, "metadata": meta, "spec": spec})
}

fn sku() -> Sku {
    serde_json::from_value(json!({"apiVersion": "craftplane.io/v1alpha1", "kind": "Sku", "metadata": {"name": "small"},
        "spec": {"resources": {"cpu": "1", "memory": "2Gi", "storage": "5Gi"}, "maxPlayers": 20}}))
    .unwrap()
}

#[derive(Default)]
struct Counts {
    generated: AtomicUsize,
    typed: AtomicUsize,
    built: AtomicUsize,
}

/// Runs every builder a reconcile would run on an object of this kind.
/// Returns whether it got as far as building children.
fn exercise(kind: &str, obj: &Value) -> Option<bool> {
    let sku = sku();
    match kind {
        "MinecraftServer" => {
            let s: MinecraftServer = serde_json::from_value(obj.clone()).ok()?;
            let tenant: Tenant =
                serde_json::from_value(wrap("Tenant", json!({"owners": [], "allowedSkus": ["small"]}), None, "t"))
                    .unwrap();
            let mut built = false;
            for (t, current) in [(None, None), (Some(&tenant), Some(s.spec.sku.as_str()))] {
                if let Ok(mut m) = resources::validate(&s, Some(&sku), t, current) {
                    m.plugins = craftplane::plugins::manifest_for(m.server_type, &[]);
                    let _ = (config_map::build(&m), pvc::build(&m, true), secret::build(&m, "pw"));
                    let game = service::game(&m);
                    let _ = (service::address(&m, Some(&game)), statefulset::build(&m));
                    let _ = statefulset::config_hash(&m);
                    built = true;
                }
            }
            if let Some(b) = &s.spec.backup {
                let _ = craftplane::backup::schedule::Schedule::parse(&b.schedule)
                    .map(|sc| sc.due(k8s_openapi::jiff::Timestamp::UNIX_EPOCH, k8s_openapi::jiff::Timestamp::now()));
                if let Some(r) = &b.retention {
                    let _ = craftplane::backup::schedule::prune(&[], r, k8s_openapi::jiff::Timestamp::now());
                }
            }
            Some(built)
        }
        "Tenant" => {
            let t: Tenant = serde_json::from_value(obj.clone()).ok()?;
            for ns in t.desired_namespaces() {
                let _ = resources::tenant::namespace(&t, &ns);
                let _ = resources::tenant::owner_role_binding(&t, &ns);
                let _ = resources::tenant::network_policies(&t, &ns, "craftplane-system");
                let _ = resources::tenant::resource_quota(&t, &ns);
                let _ = resources::tenant::limit_range(&t, &ns);
                let _ = resources::tenant::policy_config_map(&t, &ns, &t.spec.allowed_skus, &Default::default());
            }
            let _ = (resources::tenant::tenant_cluster_role(&t), resources::tenant::tenant_cluster_role_binding(&t));
            Some(true)
        }
        "PluginInstallation" => {
            let mut p: PluginInstallation = serde_json::from_value(obj.clone()).ok()?;
            if let Some(u) = &p.spec.source.url {
                let file = craftplane::plugins::file_name_from_url(&u.url);
                p.status = Some(
                    serde_json::from_value(json!({"phase": "Resolved", "resolved": {
                    "url": u.url, "fileName": file, "sha256": u.sha256, "sha512": u.sha512}}))
                    .unwrap(),
                );
            }
            for t in [craftplane::api::server::ServerType::Paper, craftplane::api::server::ServerType::Fabric] {
                let m = craftplane::plugins::manifest_for(t, &[&p]);
                let _ = m.to_json();
            }
            Some(true)
        }
        "BackupSnapshot" => {
            let b: BackupSnapshot = serde_json::from_value(obj.clone()).ok()?;
            let mut flags = vec![];
            for i in &b.spec.include {
                flags.extend(["--include".to_string(), i.clone()]);
            }
            let _ = backup_job::build(&JobInput {
                name: backup_job::child_name(&b.metadata.name.clone().unwrap_or_default(), "backup"),
                namespace: "games".into(),
                server: b.spec.server.clone(),
                owner: Default::default(),
                snapshot: "s".into(),
                location: "s3://b/p".into(),
                image: "i".into(),
                settings: BTreeMap::new(),
                credentials: None,
                node: None,
                placement: None,
                task: Task::Backup { flags, rcon: b.spec.retain.then(|| "10.0.0.1:25575".into()) },
            });
            Some(true)
        }
        _ => None,
    }
}

fn any_object() -> BoxedStrategy<(&'static str, Value)> {
    prop_oneof![
        server_spec().prop_map(|s| ("MinecraftServer", s)),
        tenant_spec().prop_map(|s| ("Tenant", s)),
        plugin_spec().prop_map(|s| ("PluginInstallation", s)),
        backup_spec().prop_map(|s| ("BackupSnapshot", s)),
    ]
    .boxed()
}

#[test]
fn builders_never_panic_on_10000_generated_specs() {
    let counts = Counts::default();
    let mut runner = TestRunner::new(Config { cases: 10_000, failure_persistence: None, ..Config::default() });
    runner
        .run(&any_object(), |(kind, spec)| {
            counts.generated.fetch_add(1, Ordering::Relaxed);
            let ns = (kind != "Tenant").then_some("games");
            if let Some(built) = exercise(kind, &wrap(kind, spec, ns, "fuzz")) {
                counts.typed.fetch_add(1, Ordering::Relaxed);
                if built {
                    counts.built.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(())
        })
        .unwrap();
    let (g, t, b) = (counts.generated.into_inner(), counts.typed.into_inner(), counts.built.into_inner());
    println!("builders: {g} generated specs, {t} deserialized, {b} built children; no panic");
    assert!(g >= 10_000);
    assert!(t > g / 20 && b > 0, "the generator must produce usable specs too ({t} typed, {b} built)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_keeps_out_what_the_types_cannot_take() {
    let client = common::client().await;
    common::ensure_crds(&client).await;
    let ns = common::namespace(&client, "fuzz").await;
    let mut runner = TestRunner::new(Config { cases: 500, ..Config::default() });
    // Half with garbage in some field, half with plausible values only.
    let dirty = any_object();
    GARBAGE.with(|g| g.set(0));
    let clean = any_object();
    let (mut accepted, mut refused) = (BTreeMap::<&str, usize>::new(), BTreeMap::<&str, usize>::new());
    let mut mismatches = Vec::new();
    for i in 0..500 {
        let strategy = if i % 2 == 0 { &dirty } else { &clean };
        let (kind, spec) = strategy.new_tree(&mut runner).unwrap().current();
        let namespaced = kind != "Tenant";
        let ar = match kind {
            "MinecraftServer" => ApiResource::erase::<MinecraftServer>(&()),
            "Tenant" => ApiResource::erase::<Tenant>(&()),
            "PluginInstallation" => ApiResource::erase::<PluginInstallation>(&()),
            _ => ApiResource::erase::<BackupSnapshot>(&()),
        };
        let api: Api<DynamicObject> = if namespaced {
            Api::namespaced_with(client.clone(), &ns, &ar)
        } else {
            Api::all_with(client.clone(), &ar)
        };
        let obj: DynamicObject =
            serde_json::from_value(json!({"apiVersion": "craftplane.io/v1alpha1", "kind": kind, "metadata": {"name": format!("fuzz-{i}")}, "spec": spec}))
                .unwrap();
        match api.create(&PostParams { dry_run: true, ..Default::default() }, &obj).await {
            Ok(stored) => {
                *accepted.entry(kind).or_default() += 1;
                // What the API server stores (defaults applied) must be ours to read and build.
                let mut v = serde_json::to_value(&stored).unwrap();
                v["metadata"]["uid"] = json!("00000000-0000-0000-0000-000000000001");
                if exercise(kind, &v).is_none() {
                    mismatches.push(format!(
                        "{kind}: accepted but not deserializable: {}",
                        serde_json::to_string(&v["spec"]).unwrap()
                    ));
                }
            }
            Err(kube::Error::Api(e)) if e.code == 422 || e.code == 400 => {
                if i % 2 == 1 && std::env::var_os("FUZZ_DEBUG").is_some() {
                    eprintln!("refused {kind}: {}", e.message);
                }
                *refused.entry(kind).or_default() += 1
            }
            Err(e) => panic!("unexpected API error for {kind}: {e}"),
        }
    }
    println!("API server (dry run): 500 generated objects; accepted {accepted:?}; refused {refused:?}");
    common::delete_namespace(&client, &ns).await;
    assert!(
        mismatches.is_empty(),
        "{} accepted objects our types cannot read:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
    for kind in ["MinecraftServer", "Tenant", "PluginInstallation", "BackupSnapshot"] {
        assert!(accepted.get(kind).is_some_and(|n| *n > 0), "no {kind} was accepted: the generator is too wild");
        assert!(refused.get(kind).is_some_and(|n| *n > 0), "no {kind} was refused");
    }
}

/// Rewrites a generated spec so it points at this test's objects: the SKU
/// "small" becomes the fixture's SKU, tenant namespaces get the test's
/// prefix (so they cannot meet another test's namespaces). Everything else
/// (garbage included) stays as generated.
fn localize(kind: &str, mut spec: Value, sku: &str, prefix: &str) -> Value {
    match kind {
        "MinecraftServer" if spec["sku"] == "small" => spec["sku"] = json!(sku),
        "Tenant" => {
            if let Some(list) = spec.get_mut("namespaces").and_then(Value::as_array_mut) {
                for n in list.iter_mut().filter(|n| n.is_string()) {
                    *n = json!(format!("{prefix}{}", n.as_str().unwrap_or_default()));
                }
            }
            if let Some(list) = spec.get_mut("allowedSkus").and_then(Value::as_array_mut) {
                for n in list.iter_mut().filter(|n| *n == "small") {
                    *n = json!(sku);
                }
            }
        }
        _ => {}
    }
    spec
}

/// Bad input through the whole reconcile: generated objects that the real
/// API server accepts are created for real, under a running operator (with
/// a Modrinth stand-in and a filesystem backup store, so every reconciler
/// runs its full path). The operator must not panic or exit, must give
/// every accepted object a status for its generation, and must let every
/// one of them be deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_reconcile_survives_every_accepted_object() {
    use common::fixture::{Fixture, tail};
    use common::operator::{Operator, SHARD_LABEL};
    use kube::api::{DeleteParams, ListParams};

    let f = Fixture::new("fuzzrec").await;
    let client = f.client.clone();
    let modrinth = common::modrinth::start().await;
    let dir = std::env::temp_dir().join(format!("craftplane-fuzzrec-{}", common::unique_suffix()));
    std::fs::create_dir_all(dir.join("store")).unwrap();
    let stores = dir.join("stores.yaml");
    std::fs::write(
        &stores,
        format!("defaultStore: main\nstores:\n- name: main\n  url: file://{}\n", dir.join("store").display()),
    )
    .unwrap();
    let mut op = Operator::start(
        &f.shard,
        &[
            "--modrinth-url",
            &format!("{}/v2", modrinth.base),
            "--backup-stores",
            stores.to_str().unwrap(),
            "--operator-namespace",
            &f.ns,
            "--helper-image",
            "craftplane:test",
            "--resync-seconds",
            "30",
        ],
    )
    .await;
    // The server the generated plugins and snapshots name ("mc"); "other" stays missing.
    f.create_server("mc", json!({})).await;

    let prefix = format!("fz{}-", common::unique_suffix());
    let mut runner = TestRunner::new(Config { cases: 400, ..Config::default() });
    let dirty = any_object();
    GARBAGE.with(|g| g.set(0));
    let clean = any_object();
    let mut generated: Vec<(&'static str, Value)> =
        (0..400).map(|i| (if i % 2 == 0 { &dirty } else { &clean }).new_tree(&mut runner).unwrap().current()).collect();
    // Servers first, so plugins and snapshots meet them as users would apply them.
    let order =
        |k: &str| ["MinecraftServer", "Tenant", "PluginInstallation", "BackupSnapshot"].iter().position(|x| *x == k);
    generated.sort_by_key(|(k, _)| order(k));

    let resource = |kind: &str| match kind {
        "MinecraftServer" => ApiResource::erase::<MinecraftServer>(&()),
        "Tenant" => ApiResource::erase::<Tenant>(&()),
        "PluginInstallation" => ApiResource::erase::<PluginInstallation>(&()),
        _ => ApiResource::erase::<BackupSnapshot>(&()),
    };
    let api_for = |kind: &str| -> Api<DynamicObject> {
        if kind == "Tenant" {
            Api::all_with(client.clone(), &resource(kind))
        } else {
            Api::namespaced_with(client.clone(), &f.ns, &resource(kind))
        }
    };
    let mut created: Vec<(&'static str, String, i64)> = Vec::new();
    let mut refused = 0;
    // One accepted tenant also claims the test's namespace (allowing the
    // fixture's SKU), so the servers there meet its quota and limits.
    let mut claimed = false;
    for (i, (kind, spec)) in generated.into_iter().enumerate() {
        let name = if kind == "Tenant" { format!("{prefix}t{i}") } else { format!("fz-{i}") };
        let mut spec = localize(kind, spec, &f.sku, &prefix);
        let claim = kind == "Tenant"
            && !claimed
            && spec.is_object()
            && spec["namespaces"].is_array() | spec["namespaces"].is_null();
        if claim {
            spec["namespaces"] = json!([f.ns]);
            spec["allowedSkus"] = json!([f.sku]);
            // The admin hands the (existing) test namespace to this tenant.
            let adoptable = json!({"metadata": {"labels": {craftplane::api::tenant::ADOPTABLE_LABEL: name}}});
            Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
                .patch(&f.ns, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(adoptable))
                .await
                .expect("mark the test namespace adoptable");
        }
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "craftplane.io/v1alpha1", "kind": kind,
            "metadata": {"name": name, "labels": {SHARD_LABEL: f.shard}},
            "spec": spec,
        }))
        .unwrap();
        match api_for(kind).create(&PostParams::default(), &obj).await {
            Ok(o) => {
                claimed |= claim;
                created.push((kind, name, o.metadata.generation.unwrap_or(1)))
            }
            Err(kube::Error::Api(e)) if e.code == 422 || e.code == 400 => refused += 1,
            Err(e) => panic!("unexpected API error for {kind}: {e}"),
        }
    }
    let mut per_kind = BTreeMap::<&str, usize>::new();
    for (k, _, _) in &created {
        *per_kind.entry(*k).or_default() += 1;
    }
    println!("whole reconcile: 400 generated, {} created {per_kind:?}, {refused} refused", created.len());
    for kind in ["MinecraftServer", "Tenant", "PluginInstallation", "BackupSnapshot"] {
        assert!(per_kind.get(kind).is_some_and(|n| *n >= 5), "too few {kind} accepted to mean anything: {per_kind:?}");
    }

    // Every accepted object gets a status for its generation.
    let shard = ListParams::default().labels(&format!("{SHARD_LABEL}={}", f.shard));
    let mut missing = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        missing.clear();
        let mut outcomes = BTreeMap::<String, usize>::new();
        let mut rejected = std::collections::BTreeSet::new();
        for kind in ["MinecraftServer", "Tenant", "PluginInstallation", "BackupSnapshot"] {
            let list = api_for(kind).list(&shard).await.unwrap();
            let seen: BTreeMap<String, &DynamicObject> =
                list.items.iter().map(|o| (o.metadata.name.clone().unwrap(), o)).collect();
            for (_, name, _) in created.iter().filter(|(k, _, _)| *k == kind) {
                let o = seen.get(name).unwrap_or_else(|| panic!("{kind} {name} vanished"));
                let status = &o.data["status"];
                if status["observedGeneration"].as_i64() != o.metadata.generation {
                    missing.push(format!("{kind} {name}: status {status}"));
                    continue;
                }
                let reason = status["conditions"]
                    .as_array()
                    .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
                    .and_then(|c| c["reason"].as_str())
                    .unwrap_or("-");
                let outcome = format!("{kind} {} {reason}", status["phase"].as_str().unwrap_or("-"));
                *outcomes.entry(outcome).or_default() += 1;
                if reason == "ChildRejected" {
                    rejected.insert(format!("{kind} {name}: {}", o.data["spec"]));
                }
            }
        }
        if let Some(status) = op.try_exit() {
            panic!("the operator exited ({status}); log:\n{}", tail(&op.log_text(), 60));
        }
        if missing.is_empty() {
            println!("whole reconcile: every accepted object has a status; outcomes:");
            for (k, n) in &outcomes {
                println!("  {n:4}  {k}");
            }
            for r in &rejected {
                println!("  refused by the API server when built: {r}");
            }
            break;
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "{} accepted objects have no status for their generation after 180s:\n{}\noperator log tail:\n{}",
                missing.len(),
                missing.iter().take(20).cloned().collect::<Vec<_>>().join("\n"),
                tail(&op.log_text(), 40)
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Every one of them can be deleted (no finalizer left hanging), and so
    // can what the operator made from them (scheduled snapshots outlive
    // their server by design).
    // Deletes are repeated for what is left: a server may start a
    // scheduled snapshot until its own deletion is seen.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let mut left = Vec::new();
        for kind in ["MinecraftServer", "Tenant", "PluginInstallation", "BackupSnapshot"] {
            let api = api_for(kind);
            for o in api.list(&shard).await.unwrap() {
                let name = o.metadata.name.unwrap_or_default();
                if o.metadata.deletion_timestamp.is_none() {
                    let _ = api.delete(&name, &DeleteParams::default()).await;
                }
                left.push(format!("{kind} {name}: finalizers {:?}", o.metadata.finalizers));
            }
        }
        if left.is_empty() {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "{} objects not deleted after 120s:\n{}\noperator log tail:\n{}",
                left.len(),
                left.join("\n"),
                tail(&op.log_text(), 40)
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let log = op.log_text();
    assert!(!log.contains("panicked"), "the operator panicked:\n{}", tail(&log, 60));
    op.stop();
    // Tenant namespaces are left for the admin on deletion: this test is the admin.
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    for n in namespaces.list(&ListParams::default()).await.unwrap().items {
        let name = n.metadata.name.unwrap_or_default();
        if name.starts_with(&prefix) || name.starts_with(&format!("tenant-{prefix}")) {
            let _ = namespaces.delete(&name, &DeleteParams::default()).await;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    f.cleanup().await;
}

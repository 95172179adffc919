//! The CRDs against the real kube-apiserver: they install and become
//! Established, every example is accepted, and invalid objects are rejected
//! with a message naming the field.

mod common;

use craftplane::api::{BackupSnapshot, ConsoleCommand, MinecraftServer, PluginInstallation, Sku, Tenant};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, ValidationDirective};
use serde_json::{Value, json};

fn api_resource(kind: &str) -> (ApiResource, bool) {
    match kind {
        "Sku" => (ApiResource::erase::<Sku>(&()), false),
        "Tenant" => (ApiResource::erase::<Tenant>(&()), false),
        "MinecraftServer" => (ApiResource::erase::<MinecraftServer>(&()), true),
        "PluginInstallation" => (ApiResource::erase::<PluginInstallation>(&()), true),
        "BackupSnapshot" => (ApiResource::erase::<BackupSnapshot>(&()), true),
        "ConsoleCommand" => (ApiResource::erase::<ConsoleCommand>(&()), true),
        other => panic!("unknown kind {other}"),
    }
}

/// Creates `obj` the way `kubectl create` does (POST, strict field
/// validation), as a server-side dry run; `Err` carries the API server's message.
async fn create_dry_run(client: &Client, ns: &str, obj: &Value) -> Result<(), String> {
    let kind = obj["kind"].as_str().expect("kind");
    let (ar, namespaced) = api_resource(kind);
    let path = if namespaced {
        format!("/apis/{}/namespaces/{ns}/{}?dryRun=All&fieldValidation=Strict", ar.api_version, ar.plural)
    } else {
        format!("/apis/{}/{}?dryRun=All&fieldValidation=Strict", ar.api_version, ar.plural)
    };
    let req = http::Request::post(path)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(obj).unwrap())
        .unwrap();
    match client.request::<Value>(req).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) => Err(format!("{} ({})", e.message, e.code)),
        Err(e) => Err(format!("transport error: {e}")),
    }
}

/// Server-side applies `obj` (strict field validation); `Err` carries the
/// API server's message.
async fn apply(client: &Client, ns: &str, obj: &Value, dry_run: bool) -> Result<(), String> {
    let kind = obj["kind"].as_str().expect("kind");
    let name = obj["metadata"]["name"].as_str().expect("name");
    let (ar, namespaced) = api_resource(kind);
    let api: Api<DynamicObject> =
        if namespaced { Api::namespaced_with(client.clone(), ns, &ar) } else { Api::all_with(client.clone(), &ar) };
    let pp = PatchParams {
        dry_run,
        force: true,
        field_manager: Some("craftplane-tests".into()),
        field_validation: Some(ValidationDirective::Strict),
    };
    match api.patch(name, &pp, &Patch::Apply(obj)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) => Err(format!("{} ({})", e.message, e.code)),
        Err(e) => Err(format!("transport error: {e}")),
    }
}

fn server(spec: Value) -> Value {
    let mut base = json!({"sku": "small", "eula": true, "type": "PAPER", "version": "1.21.4"});
    merge(&mut base, spec);
    json!({"apiVersion": "craftplane.io/v1alpha1", "kind": "MinecraftServer", "metadata": {"name": "bad"}, "spec": base})
}

fn sku(spec: Value) -> Value {
    let mut base = json!({"resources": {"cpu": "1", "memory": "2Gi", "storage": "5Gi"}});
    merge(&mut base, spec);
    json!({"apiVersion": "craftplane.io/v1alpha1", "kind": "Sku", "metadata": {"name": "bad-sku"}, "spec": base})
}

fn tenant(spec: Value) -> Value {
    let mut base = json!({"owners": [{"kind": "User", "name": "alice"}]});
    merge(&mut base, spec);
    json!({"apiVersion": "craftplane.io/v1alpha1", "kind": "Tenant", "metadata": {"name": "bad-tenant"}, "spec": base})
}

fn plugin(source: Value) -> Value {
    json!({"apiVersion": "craftplane.io/v1alpha1", "kind": "PluginInstallation", "metadata": {"name": "bad"},
           "spec": {"server": "survival", "source": source}})
}

fn backup(spec: Value) -> Value {
    let mut base = json!({"server": "survival"});
    merge(&mut base, spec);
    json!({"apiVersion": "craftplane.io/v1alpha1", "kind": "BackupSnapshot", "metadata": {"name": "bad"}, "spec": base})
}

fn console(spec: Value) -> Value {
    let mut o = json!({"apiVersion": "craftplane.io/v1alpha1", "kind": "ConsoleCommand",
        "metadata": {"name": "cmd"}, "spec": {"server": "s", "command": "list"}});
    merge(&mut o["spec"], spec);
    o
}

/// Deep-merges `patch` into `base`; `null` removes a key.
fn merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    b.remove(&k);
                } else {
                    merge(b.entry(k).or_insert(Value::Null), v);
                }
            }
        }
        (b, p) => *b = p,
    }
}

const SHA256: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// `kubectl get mccmd` columns.
const CONSOLE_COLUMNS: [&str; 4] = ["Server", "Command", "Phase", "Age"];

#[tokio::test]
async fn crds_install_and_become_established() {
    let client = common::client().await;
    common::ensure_crds(&client).await;
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let expected = [
        ("skus.craftplane.io", "sku", "Cluster"),
        ("tenants.craftplane.io", "tenant", "Cluster"),
        ("minecraftservers.craftplane.io", "mcs", "Namespaced"),
        ("plugininstallations.craftplane.io", "plugin", "Namespaced"),
        ("backupsnapshots.craftplane.io", "backup", "Namespaced"),
        ("consolecommands.craftplane.io", "mccmd", "Namespaced"),
    ];
    for (name, short, scope) in expected {
        let crd = api.get(name).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        let established = crd
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Established" && c.status == "True"));
        assert!(established, "{name} is not Established");
        assert_eq!(crd.spec.scope, scope, "{name} scope");
        assert_eq!(
            crd.spec.names.short_names.clone().unwrap_or_default(),
            vec![short.to_string()],
            "{name} short names"
        );
        assert_eq!(
            crd.spec.names.categories.clone().unwrap_or_default(),
            vec!["craftplane".to_string()],
            "{name} categories"
        );
        let v = &crd.spec.versions[0];
        assert_eq!(v.name, "v1alpha1");
        assert!(v.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some(), "{name} has a status subresource");
        let columns = v.additional_printer_columns.clone().unwrap_or_default();
        assert!(columns.iter().any(|c| c.name == "Age"), "{name} has printer columns");
    }
    // `kubectl get craftplane -A` lists an object of every kind through the category.
    let ns = common::namespace(&client, "category").await;
    let suffix = common::unique_suffix();
    let named = |mut o: Value, name: &str| {
        o["metadata"]["name"] = json!(name);
        o
    };
    let objects = [
        named(sku(json!({})), &format!("listed-{suffix}")),
        named(tenant(json!({})), &format!("listed-{suffix}")),
        named(server(json!({})), "listed"),
        named(plugin(json!({"url": {"url": "https://example.org/p.jar", "sha256": "0".repeat(64)}})), "listed"),
        named(backup(json!({})), "listed"),
        named(console(json!({})), "listed"),
    ];
    for o in &objects {
        apply(&client, &ns, o, false).await.unwrap_or_else(|e| panic!("create {}: {e}", o["kind"]));
    }
    let out = std::process::Command::new(common::kubectl())
        .arg("--kubeconfig")
        .arg(common::kubeconfig_path())
        .args(["get", "craftplane", "-A", "-o", "name"])
        .output()
        .expect("run kubectl");
    assert!(out.status.success(), "kubectl get craftplane -A failed: {}", String::from_utf8_lossy(&out.stderr));
    let listed = String::from_utf8_lossy(&out.stdout);
    for o in &objects {
        let (kind, name) = (o["kind"].as_str().unwrap().to_lowercase(), o["metadata"]["name"].as_str().unwrap());
        let line = format!("{kind}.craftplane.io/{name}");
        assert!(listed.lines().any(|l| l == line), "`kubectl get craftplane -A` does not list {line}:\n{listed}");
    }
    for (kind, o) in [("Sku", &objects[0]), ("Tenant", &objects[1])] {
        let (ar, _) = api_resource(kind);
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        let _ = api.delete(o["metadata"]["name"].as_str().unwrap(), &Default::default()).await;
    }
    common::delete_namespace(&client, &ns).await;
    // Server columns are the ones a person wants.
    let mcs = api.get("minecraftservers.craftplane.io").await.unwrap();
    let names: Vec<String> =
        mcs.spec.versions[0].additional_printer_columns.clone().unwrap().into_iter().map(|c| c.name).collect();
    assert_eq!(names, ["SKU", "Type", "Version", "Phase", "Players", "Address", "Age"]);
    let cmd = api.get("consolecommands.craftplane.io").await.unwrap();
    let names: Vec<String> =
        cmd.spec.versions[0].additional_printer_columns.clone().unwrap().into_iter().map(|c| c.name).collect();
    assert_eq!(names, CONSOLE_COLUMNS);
}

#[tokio::test]
async fn every_example_is_accepted() {
    let client = common::client().await;
    common::ensure_crds(&client).await;
    let ns = common::namespace(&client, "examples").await;
    let mut count = 0;
    let mut files: Vec<_> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "examples/ has manifests");
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value: Value = serde::Deserialize::deserialize(doc).unwrap();
            if value.is_null() {
                continue;
            }
            // Validate the manifest as written, in a scratch namespace and
            // under a fresh name so objects already in the cluster do not interfere.
            let mut value = value;
            if value["metadata"]["namespace"].is_string() {
                value["metadata"]["namespace"] = json!(ns);
            } else {
                let n = format!("{}-{}", value["metadata"]["name"].as_str().unwrap(), common::unique_suffix());
                value["metadata"]["name"] = json!(n);
            }
            create_dry_run(&client, &ns, &value)
                .await
                .unwrap_or_else(|e| panic!("{} {} rejected: {e}", file.display(), value["metadata"]["name"]));
            // The typed API accepts it too (the example matches the Rust types).
            let kind = value["kind"].as_str().unwrap();
            let typed_ok = match kind {
                "Sku" => serde_json::from_value::<Sku>(value.clone()).is_ok(),
                "Tenant" => serde_json::from_value::<Tenant>(value.clone()).is_ok(),
                "MinecraftServer" => serde_json::from_value::<MinecraftServer>(value.clone()).is_ok(),
                "PluginInstallation" => serde_json::from_value::<PluginInstallation>(value.clone()).is_ok(),
                "BackupSnapshot" => serde_json::from_value::<BackupSnapshot>(value.clone()).is_ok(),
                "ConsoleCommand" => serde_json::from_value::<ConsoleCommand>(value.clone()).is_ok(),
                _ => false,
            };
            assert!(typed_ok, "{} {kind} does not parse into the Rust type", file.display());
            count += 1;
        }
    }
    common::delete_namespace(&client, &ns).await;
    println!("{count} example objects accepted");
    assert!(count >= 7);
}

/// (description, object, expected substrings of the rejection: the field path and the reason)
fn invalid_cases() -> Vec<(&'static str, Value, &'static [&'static str])> {
    vec![
        ("eula false", server(json!({"eula": false})), &["spec.eula", "eula must be true"]),
        ("eula missing", server(json!({"eula": null})), &["spec.eula", "Required"]),
        ("unknown server type", server(json!({"type": "BEDROCK"})), &["spec.type", "Unsupported value"]),
        ("malformed version", server(json!({"version": "1.21.x"})), &["spec.version"]),
        ("snapshot without a number", server(json!({"version": "26.1-snapshot"})), &["spec.version"]),
        ("sku missing", server(json!({"sku": null})), &["spec.sku", "Required"]),
        (
            "managed property",
            server(json!({"properties": {"rcon.password": "x"}})),
            &["spec.properties", "managed by craftplane"],
        ),
        (
            "bad property name",
            server(json!({"properties": {"View Distance": "8"}})),
            &["spec.properties", "property names"],
        ),
        ("zero max players", server(json!({"maxPlayers": 0})), &["spec.maxPlayers"]),
        ("motd with a newline", server(json!({"motd": "line one\nline two"})), &["spec.motd", "line breaks"]),
        ("motd with a tab", server(json!({"motd": "a\tb"})), &["spec.motd", "control characters"]),
        ("motd with an escape", server(json!({"motd": "\u{1b}[31mred"})), &["spec.motd", "control characters"]),
        ("motd with a C1 control", server(json!({"motd": "a\u{85}b"})), &["spec.motd", "control characters"]),
        ("port out of range", server(json!({"service": {"port": 70000}})), &["spec.service.port"]),
        (
            "nodePort on ClusterIP",
            server(json!({"service": {"type": "ClusterIP", "nodePort": 30001}})),
            &["spec.service", "nodePort needs type"],
        ),
        (
            "nodePort on Headless (the default type)",
            server(json!({"service": {"nodePort": 30001}})),
            &["spec.service", "nodePort needs type"],
        ),
        ("negative storage", server(json!({"storage": {"size": "-5Gi"}})), &["spec.storage.size", "non-negative"]),
        ("malformed storage", server(json!({"storage": {"size": "lots"}})), &["spec.storage.size", "quantity"]),
        ("unknown field", server(json!({"colour": "blue"})), &["unknown field", "spec.colour"]),
        ("bad whitelist name", server(json!({"whitelist": ["not a player"]})), &["spec.whitelist[0]"]),
        ("bad backup schedule", server(json!({"backup": {"schedule": "daily"}})), &["spec.backup.schedule"]),
        (
            "backup schedule minute 61",
            server(json!({"backup": {"schedule": "61 * * * *"}})),
            &["spec.backup.schedule", "cron expression"],
        ),
        (
            "backup schedule of words",
            server(json!({"backup": {"schedule": "a b c d e"}})),
            &["spec.backup.schedule", "cron expression"],
        ),
        (
            "backup schedule @midnight",
            server(json!({"backup": {"schedule": "@midnight"}})),
            &["spec.backup.schedule", "cron expression"],
        ),
        ("jvm arg without dash", server(json!({"jvmArgs": ["Xmx4G"]})), &["spec.jvmArgs[0]"]),
        (
            "unknown deletion policy",
            server(json!({"deletionPolicy": "Shred"})),
            &["spec.deletionPolicy", "Unsupported value"],
        ),
        ("zero cpu", sku(json!({"resources": {"cpu": "0"}})), &["spec.resources.cpu", "greater than zero"]),
        ("malformed memory", sku(json!({"resources": {"memory": "4GB"}})), &["spec.resources.memory", "quantity"]),
        (
            "too little memory",
            sku(json!({"resources": {"memory": "256Mi"}})),
            &["spec.resources.memory", "at least 512Mi"],
        ),
        (
            "heap and heapPercent",
            sku(json!({"jvm": {"heap": "1G", "heapPercent": 50}})),
            &["spec.jvm", "either heap or heapPercent"],
        ),
        ("bad currency", sku(json!({"price": {"amount": "1.00", "currency": "euro"}})), &["spec.price.currency"]),
        ("no owners", tenant(json!({"owners": []})), &["spec.owners"]),
        (
            "service account without namespace",
            tenant(json!({"owners": [{"kind": "ServiceAccount", "name": "ci"}]})),
            &["spec.owners[0]", "namespace is required"],
        ),
        (
            "server name starting with a digit",
            {
                let mut o = server(json!({}));
                o["metadata"]["name"] = json!("1st");
                o
            },
            &["a server name must start with a letter"],
        ),
        (
            "tenant name too long for its namespace",
            {
                let mut o = tenant(json!({}));
                o["metadata"]["name"] = json!("t".repeat(57));
                o
            },
            &["a tenant name may have at most 56 characters"],
        ),
        (
            "zero storage",
            server(json!({"storage": {"size": "0"}})),
            &["spec.storage.size", "must be greater than zero"],
        ),
        (
            "service account name not a DNS name",
            tenant(json!({"owners": [{"kind": "ServiceAccount", "name": "bot@x", "namespace": "ci"}]})),
            &["spec.owners[0]", "ServiceAccount name must be a lowercase DNS subdomain"],
        ),
        (
            "bad CIDR",
            tenant(json!({"network": {"allowedIngressCidrs": ["10.0.0.0/33"]}})),
            &["spec.network.allowedIngressCidrs", "CIDR"],
        ),
        ("bad namespace name", tenant(json!({"namespaces": ["Bad_NS"]})), &["spec.namespaces[0]"]),
        ("negative quota", tenant(json!({"quota": {"maxServers": -1}})), &["spec.quota.maxServers"]),
        (
            "two plugin sources",
            plugin(
                json!({"url": {"url": "https://example.com/a.jar", "sha256": SHA256}, "modrinth": {"project": "luckperms"}}),
            ),
            &["spec.source", "exactly one plugin source"],
        ),
        ("no plugin source", plugin(json!({})), &["spec.source", "exactly one plugin source"]),
        (
            "url without checksum",
            plugin(json!({"url": {"url": "https://example.com/a.jar"}})),
            &["spec.source.url", "exactly one checksum"],
        ),
        (
            "short sha256",
            plugin(json!({"url": {"url": "https://example.com/a.jar", "sha256": "abc123"}})),
            &["spec.source.url.sha256"],
        ),
        (
            "ftp plugin url",
            plugin(json!({"url": {"url": "ftp://example.com/a.jar", "sha256": SHA256}})),
            &["spec.source.url.url", "http(s) URL"],
        ),
        ("unknown compression", backup(json!({"compression": "lz4"})), &["spec.compression", "Unsupported value"]),
        ("path escaping the world", backup(json!({"include": ["../etc"]})), &["spec.include", "must not contain '..'"]),
        ("unknown backup reason", backup(json!({"reason": "Whenever"})), &["spec.reason", "Unsupported value"]),
        ("unknown difficulty", server(json!({"difficulty": "nightmare"})), &["spec.difficulty", "Unsupported value"]),
        (
            "game rule value not a boolean or integer",
            server(json!({"gameRules": {"keepInventory": "yes please"}})),
            &["spec.gameRules.keepInventory", "should match"],
        ),
        ("command with a line break", console(json!({"command": "say hi\nstop"})), &["spec.command", "one line"]),
        ("empty command", console(json!({"command": ""})), &["spec.command"]),
        ("command TTL too short", console(json!({"ttlSecondsAfterFinished": 1})), &["spec.ttlSecondsAfterFinished"]),
    ]
}

#[tokio::test]
async fn invalid_objects_are_rejected_with_the_field_named() {
    let client = common::client().await;
    common::ensure_crds(&client).await;
    let ns = common::namespace(&client, "invalid").await;
    let cases = invalid_cases();
    let mut failures = Vec::new();
    println!("{:<36} {:<10} message", "case", "result");
    for (what, obj, expected) in &cases {
        match create_dry_run(&client, &ns, obj).await {
            Ok(()) => {
                println!("{what:<36} {:<10} -", "ACCEPTED");
                failures.push(format!("{what}: accepted"));
            }
            Err(msg) => {
                let ok = (msg.contains("(422)") || msg.contains("(400)")) && expected.iter().all(|e| msg.contains(e));
                println!(
                    "{what:<36} {:<10} {}",
                    if ok { "rejected" } else { "WRONG" },
                    msg.chars().take(160).collect::<String>()
                );
                if !ok {
                    failures.push(format!("{what}: expected {expected:?} in: {msg}"));
                }
            }
        }
    }
    common::delete_namespace(&client, &ns).await;
    assert!(cases.len() >= 15);
    assert!(failures.is_empty(), "{} of {} cases wrong:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

/// Issue 32: `spec.hostnames` is bounded by the schema (at most 8, each a
/// lowercase RFC 1123 name of at most 253 characters, each once); the
/// deprecated `spec.hostname` is still accepted.
#[tokio::test]
async fn hostnames_are_bounded_by_the_schema() {
    let client = common::client().await;
    common::ensure_crds(&client).await;
    let ns = common::namespace(&client, "hostnames").await;
    let long_label = format!("{}.example.com", "a".repeat(64));
    let too_long = format!("{}.com", ["b".repeat(63), "c".repeat(63), "d".repeat(63), "e".repeat(60)].join("."));
    let nine: Vec<String> = (0..9).map(|i| format!("mc{i}.example.com")).collect();
    let refused: Vec<(&str, Value)> = vec![
        ("upper case", json!(["MC.example.com"])),
        ("empty label", json!(["mc..example.com"])),
        ("trailing dot", json!(["mc.example.com."])),
        ("leading hyphen", json!(["-mc.example.com"])),
        ("underscore", json!(["mc_1.example.com"])),
        ("label over 63", json!([long_label])),
        ("name over 253", json!([too_long])),
        ("empty", json!([""])),
        ("a port", json!(["mc.example.com:25565"])),
        ("a NUL suffix", json!(["mc.example.com\u{0}FML3\u{0}"])),
        ("nine names", json!(nine)),
        ("twice the same", json!(["mc.example.com", "mc.example.com"])),
    ];
    let mut failures = Vec::new();
    for (what, hostnames) in &refused {
        match create_dry_run(&client, &ns, &server(json!({"hostnames": hostnames}))).await {
            Ok(()) => failures.push(format!("{what}: accepted")),
            Err(m) if !m.contains("spec.hostnames") || !(m.contains("(422)") || m.contains("(400)")) => {
                failures.push(format!("{what}: {m}"))
            }
            Err(_) => {}
        }
    }
    let eight: Vec<String> = (0..8).map(|i| format!("mc{i}.example.com")).collect();
    let accepted = [
        ("eight names", server(json!({"hostnames": eight}))),
        ("the longest labels", server(json!({"hostnames": [format!("{}.example.com", "a".repeat(63))]}))),
        ("deprecated hostname", server(json!({"hostname": "mc.example.com", "hostnames": ["eu.example.com"]}))),
    ];
    for (what, obj) in &accepted {
        if let Err(m) = create_dry_run(&client, &ns, obj).await {
            failures.push(format!("{what}: rejected: {m}"));
        }
    }
    common::delete_namespace(&client, &ns).await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// What the stricter rules must still let through.
#[tokio::test]
async fn valid_edge_cases_are_accepted() {
    let client = common::client().await;
    common::ensure_crds(&client).await;
    let ns = common::namespace(&client, "valid").await;
    let cases = [
        ("two-line motd escape", server(json!({"motd": "Line one\\nLine two"}))),
        ("motd with formatting codes", server(json!({"motd": "A §l§cMinecraft§r §nserver ☃"}))),
        ("schedule with seconds", server(json!({"backup": {"schedule": "*/10 * * * * *"}}))),
        ("schedule with names and steps", server(json!({"backup": {"schedule": "0 */6 ? JAN-JUN MON-FRI"}}))),
        ("schedule alias", server(json!({"backup": {"schedule": "@daily"}}))),
        ("new-style snapshot version", server(json!({"version": "26.1-snapshot-1"}))),
        ("new-style pre-release version", server(json!({"version": "26.1-pre-1"}))),
        ("new-style release candidate", server(json!({"version": "26.1-rc-2"}))),
        ("old-style release candidate", server(json!({"version": "1.21.5-rc1"}))),
        (
            "live settings",
            server(json!({"difficulty": "hard", "gameRules": {"keepInventory": "true", "randomTickSpeed": "-3"}})),
        ),
        ("a console command", console(json!({"command": "say hello world", "ttlSecondsAfterFinished": 60}))),
    ];
    let mut failures = Vec::new();
    for (what, obj) in &cases {
        if let Err(msg) = create_dry_run(&client, &ns, obj).await {
            failures.push(format!("{what}: rejected: {msg}"));
        }
    }
    common::delete_namespace(&client, &ns).await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn immutable_fields_cannot_change() {
    let client = common::client().await;
    common::ensure_crds(&client).await;
    let ns = common::namespace(&client, "immutable").await;
    let name = |o: &mut Value, n: &str| o["metadata"]["name"] = json!(n);

    let mut snap = backup(json!({"compression": "zstd"}));
    name(&mut snap, "snap");
    apply(&client, &ns, &snap, false).await.expect("create snapshot");
    let mut mcs = server(json!({"storage": {"size": "10Gi", "storageClassName": "standard"}}));
    name(&mut mcs, "world");
    apply(&client, &ns, &mcs, false).await.expect("create server");
    let mut plug = plugin(json!({"modrinth": {"project": "luckperms"}}));
    name(&mut plug, "perms");
    apply(&client, &ns, &plug, false).await.expect("create plugin");
    let cmd = console(json!({}));
    apply(&client, &ns, &cmd, false).await.expect("create console command");

    let mut changes: Vec<(&str, Value, &[&str])> = Vec::new();
    let mut v = snap.clone();
    merge(&mut v, json!({"spec": {"server": "other"}}));
    changes.push(("snapshot server", v, &["spec.server", "server is immutable"]));
    let mut v = snap.clone();
    merge(&mut v, json!({"spec": {"compression": "gzip"}}));
    changes.push(("snapshot compression", v, &["spec.compression", "immutable"]));
    let mut v = snap.clone();
    merge(&mut v, json!({"spec": {"store": {"name": "elsewhere"}}}));
    changes.push(("snapshot store added", v, &["spec.store", "immutable"]));
    let mut v = plug.clone();
    merge(&mut v, json!({"spec": {"server": "other"}}));
    changes.push(("plugin server", v, &["spec.server", "immutable"]));
    let mut v = mcs.clone();
    merge(&mut v, json!({"spec": {"storage": {"size": "5Gi"}}}));
    changes.push(("server storage shrink", v, &["spec.storage.size", "cannot shrink"]));
    let mut v = mcs.clone();
    merge(&mut v, json!({"spec": {"storage": {"storageClassName": "fast"}}}));
    changes.push(("server storage class", v, &["spec.storage.storageClassName", "immutable"]));
    let mut v = cmd.clone();
    merge(&mut v, json!({"spec": {"command": "stop"}}));
    changes.push(("console command", v, &["runs once"]));

    let mut failures = Vec::new();
    for (what, obj, expected) in &changes {
        match apply(&client, &ns, obj, true).await {
            Ok(()) => failures.push(format!("{what}: accepted")),
            Err(msg) => {
                println!("{what:<28} rejected: {}", msg.chars().take(160).collect::<String>());
                if !expected.iter().all(|e| msg.contains(e)) {
                    failures.push(format!("{what}: expected {expected:?} in: {msg}"));
                }
            }
        }
    }
    // Allowed changes still go through: growing storage, pinning a snapshot.
    let mut v = mcs.clone();
    merge(&mut v, json!({"spec": {"storage": {"size": "20Gi"}}}));
    apply(&client, &ns, &v, true).await.expect("growing storage is allowed");
    let mut v = snap.clone();
    merge(&mut v, json!({"spec": {"retain": true}}));
    apply(&client, &ns, &v, true).await.expect("pinning a snapshot is allowed");

    common::delete_namespace(&client, &ns).await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn defaults_are_applied_by_the_api_server() {
    let client = common::client().await;
    common::ensure_crds(&client).await;
    let ns = common::namespace(&client, "defaults").await;
    let obj = json!({"apiVersion": "craftplane.io/v1alpha1", "kind": "MinecraftServer", "metadata": {"name": "minimal"},
                     "spec": {"sku": "small", "eula": true, "service": {}, "gracefulStop": {}}});
    apply(&client, &ns, &obj, false).await.expect("minimal server");
    // The raw object as stored: a typed read would fill in the same values
    // from serde defaults even if the API server applied none.
    let req = http::Request::get(format!("/apis/craftplane.io/v1alpha1/namespaces/{ns}/minecraftservers/minimal"))
        .body(Vec::new())
        .unwrap();
    let raw: Value = client.request(req).await.expect("get raw");
    let spec = &raw["spec"];
    let mut missing = Vec::new();
    for (path, want) in [
        ("/version", json!("LATEST")),
        ("/type", json!("VANILLA")),
        ("/state", json!("Running")),
        ("/deletionPolicy", json!("Retain")),
        ("/service/type", json!("Headless")),
        ("/service/port", json!(25565)),
        ("/gracefulStop/timeoutSeconds", json!(120)),
    ] {
        if spec.pointer(path) != Some(&want) {
            missing.push(format!("spec{path}: want {want}, stored {:?}", spec.pointer(path)));
        }
    }
    common::delete_namespace(&client, &ns).await;
    assert!(missing.is_empty(), "defaults not applied by the API server:\n{}", missing.join("\n"));
}

//! A real local control plane on loopback: etcd, kube-apiserver (RBAC,
//! ServiceAccount tokens, default admission plugins), kube-controller-manager,
//! kube-scheduler and kwok with fake nodes. State lives in one directory.

use std::collections::BTreeMap;
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use xshell::{Shell, cmd};

use crate::node::{self, Node};
use crate::tools::{self, Tools};

/// Number of fake kwok nodes.
const NODES: usize = 3;
/// Service IP range of the local cluster (objects only: no traffic is sent there).
/// Paths of kube-controller-manager and kube-scheduler open to anonymous
/// requests.
const PROFILING_PATHS: &str = "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics,/debug/pprof/*";
pub(crate) const SERVICE_CIDR: &str = "10.96.0.0/16";
const SERVICE_IP: &str = "10.96.0.1";

/// Start order; stopped in reverse.
const COMPONENTS: [&str; 5] = ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"];

pub struct Cluster {
    pub dir: PathBuf,
    /// Start the real node (kubelet + containerd) beside the kwok nodes.
    pub real_node: bool,
}

impl Cluster {
    /// The developer cluster (`cargo xtask cluster up`).
    pub fn dev() -> Cluster {
        Cluster { dir: tools::cache_dir().join("clusters").join("dev"), real_node: true }
    }

    /// A throw-away cluster for one test run.
    pub fn ephemeral(name: &str) -> Cluster {
        Cluster { dir: tools::cache_dir().join("clusters").join(name), real_node: true }
    }

    /// Only kwok nodes (the scale benchmarks: thousands of fake pods, and no
    /// kubelet's CPU in the figures).
    pub fn kwok_only(mut self) -> Cluster {
        self.real_node = false;
        self
    }

    /// The real node, once its network exists.
    pub fn node(&self) -> Option<Node> {
        Node::of(&self.dir)
    }

    pub fn node_running(&self) -> bool {
        self.node().is_some_and(|n| n.running().len() == node::COMPONENTS.len())
    }

    pub fn containerd_socket(&self) -> PathBuf {
        self.node().map(|n| n.containerd_socket()).unwrap_or_default()
    }

    /// Loads OCI archives into the real node's containerd.
    pub fn import_images(&self, archives: &[&Path]) -> Result<()> {
        let node = self.node().context("this cluster has no real node")?;
        node.import(archives)
    }

    /// Address host-side servers listen on so that real pods reach them
    /// (the host end of the node's veth; 127.0.0.1 without a real node).
    pub fn host_ip(&self) -> String {
        self.node().map(|n| n.host_ip()).unwrap_or_else(|| "127.0.0.1".into())
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// Kubeconfig of the `craftplane-operator` user.
    pub fn operator_kubeconfig(&self) -> PathBuf {
        self.dir.join("operator.kubeconfig")
    }

    /// The API server's audit log (every write, metadata level, JSON lines).
    pub fn audit_log(&self) -> PathBuf {
        self.dir.join("logs").join("audit.log")
    }

    fn pid_file(&self, c: &str) -> PathBuf {
        self.dir.join("run").join(format!("{c}.pid"))
    }

    fn log_file(&self, c: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{c}.log"))
    }

    /// Component name → pid, for the processes that are alive.
    pub fn running(&self) -> BTreeMap<&'static str, u32> {
        let mut out = BTreeMap::new();
        for c in COMPONENTS {
            if let Some(pid) = read_pid(&self.pid_file(c))
                && process_alive(pid, c)
            {
                out.insert(c, pid);
            }
        }
        out
    }

    fn healthy(&self, sh: &Shell, tools: &Tools) -> bool {
        self.running().len() == COMPONENTS.len()
            && (!self.real_node || self.node_running())
            && self.kubectl_raw(sh, tools, "/readyz").is_ok()
    }

    fn kubectl_raw(&self, sh: &Shell, tools: &Tools, path: &str) -> Result<String> {
        let kubectl = &tools.kubectl;
        let kc = self.kubeconfig();
        Ok(cmd!(sh, "{kubectl} --kubeconfig {kc} --request-timeout=5s get --raw {path}")
            .quiet()
            .ignore_stderr()
            .read()?)
    }

    /// Starts the control plane; does nothing when it already runs.
    pub fn up(&self, sh: &Shell) -> Result<()> {
        let tools = tools::ensure(sh)?;
        if self.healthy(sh, &tools) {
            eprintln!("xtask: control plane already running in {}", self.dir.display());
            return Ok(());
        }
        // Anything half-started from before is stopped and wiped.
        self.down()?;
        let t0 = Instant::now();
        for sub in ["pki", "logs", "run", "etcd"] {
            fs::create_dir_all(self.dir.join(sub))?;
        }
        // The real node's network first: the API server listens on the host
        // end of its veth, where pods reach it.
        let node = if self.real_node {
            node::ensure_packages(sh)?;
            Some(Node::create_network(&self.dir)?)
        } else {
            None
        };
        let api_host = node.as_ref().map(|n| n.host_ip()).unwrap_or_else(|| "127.0.0.1".into());
        let ports = Ports::allocate()?;
        let tokens = self.write_credentials(sh, &ports, &api_host)?;
        let d = &self.dir;
        let pki = d.join("pki");
        let p = |name: &str| pki.join(name).display().to_string();

        self.spawn(
            "etcd",
            &tools.etcd,
            &[
                "--name=craftplane".into(),
                format!("--data-dir={}", d.join("etcd").display()),
                format!("--listen-client-urls=http://127.0.0.1:{}", ports.etcd_client),
                format!("--advertise-client-urls=http://127.0.0.1:{}", ports.etcd_client),
                format!("--listen-peer-urls=http://127.0.0.1:{}", ports.etcd_peer),
                format!("--initial-advertise-peer-urls=http://127.0.0.1:{}", ports.etcd_peer),
                format!("--initial-cluster=craftplane=http://127.0.0.1:{}", ports.etcd_peer),
                "--unsafe-no-fsync=true".into(),
                "--quota-backend-bytes=8589934592".into(),
                "--log-level=warn".into(),
            ],
        )?;
        wait_for("etcd", Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", ports.etcd_client)).is_ok()
        })?;

        self.spawn(
            "kube-apiserver",
            &tools.kube_apiserver,
            &[
                format!("--etcd-servers=http://127.0.0.1:{}", ports.etcd_client),
                format!("--bind-address={api_host}"),
                format!("--advertise-address={api_host}"),
                format!("--secure-port={}", ports.apiserver),
                // `kubectl logs/exec/port-forward` reach the real node's kubelet.
                "--kubelet-preferred-address-types=InternalIP,Hostname".into(),
                format!("--kubelet-client-certificate={}", p("kubelet-client.crt")),
                format!("--kubelet-client-key={}", p("kubelet-client.key")),
                format!("--tls-cert-file={}", p("apiserver.crt")),
                format!("--tls-private-key-file={}", p("apiserver.key")),
                format!("--client-ca-file={}", p("ca.crt")),
                format!("--token-auth-file={}", d.join("tokens.csv").display()),
                "--authorization-mode=Node,RBAC".into(),
                format!("--service-cluster-ip-range={SERVICE_CIDR}"),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
                format!("--service-account-key-file={}", p("sa.pub")),
                format!("--service-account-signing-key-file={}", p("sa.key")),
                "--api-audiences=https://kubernetes.default.svc.cluster.local".into(),
                "--allow-privileged=true".into(),
                format!("--cert-dir={}", pki.display()),
                format!("--audit-policy-file={}", d.join("audit-policy.yaml").display()),
                format!("--audit-log-path={}", self.audit_log().display()),
                "--audit-log-format=json".into(),
                // MB before it rotates: a rotation mid-run would cut the bench's
                // line-numbered windows; 10,000 servers write a few GB.
                "--audit-log-maxsize=20000".into(),
                "--v=0".into(),
            ],
        )?;
        wait_for("kube-apiserver /readyz", Duration::from_secs(120), || {
            self.kubectl_raw(sh, &tools, "/readyz").is_ok()
        })
        .with_context(|| format!("see {}", self.log_file("kube-apiserver").display()))?;

        self.spawn(
            "kube-controller-manager",
            &tools.kube_controller_manager,
            &[
                format!("--kubeconfig={}", d.join("kube-controller-manager.kubeconfig").display()),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={}", ports.controller_manager),
                format!("--cert-dir={}", pki.join("kcm").display()),
                "--leader-elect=false".into(),
                "--use-service-account-credentials=true".into(),
                format!("--service-account-private-key-file={}", p("sa.key")),
                format!("--root-ca-file={}", p("ca.crt")),
                format!("--cluster-signing-cert-file={}", p("ca.crt")),
                format!("--cluster-signing-key-file={}", p("ca.key")),
                format!("--service-cluster-ip-range={SERVICE_CIDR}"),
                "--enable-hostpath-provisioner=true".into(),
                "--controllers=*".into(),
                "--concurrent-statefulset-syncs=20".into(),
                "--concurrent-gc-syncs=50".into(),
                // Quotas recomputed every 15 s (default 5 min): a quota first
                // synced before its CRD was discovered otherwise stays
                // "status unknown" (every create refused) for minutes, as
                // tests/tenant.rs met when it ran right after `up`.
                "--resource-quota-sync-period=15s".into(),
                "--kube-api-qps=200".into(),
                "--kube-api-burst=400".into(),
                // CPU profiles and metrics without credentials (it listens on
                // 127.0.0.1 only): where the control plane spends its time
                // decides what a large bench can reach.
                PROFILING_PATHS.into(),
            ],
        )?;
        self.spawn(
            "kube-scheduler",
            &tools.kube_scheduler,
            &[
                format!("--kubeconfig={}", d.join("kube-scheduler.kubeconfig").display()),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={}", ports.scheduler),
                format!("--cert-dir={}", pki.join("scheduler").display()),
                "--leader-elect=false".into(),
                "--kube-api-qps=200".into(),
                "--kube-api-burst=400".into(),
                // CPU profiles and metrics without credentials (it listens on
                // 127.0.0.1 only): where the control plane spends its time
                // decides what a large bench can reach.
                PROFILING_PATHS.into(),
            ],
        )?;
        self.spawn(
            "kwok",
            &tools.kwok,
            &[
                format!("--kubeconfig={}", d.join("kwok.kubeconfig").display()),
                format!("--config={}", tools.kwok_stages.display()),
                "--manage-all-nodes=false".into(),
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake".into(),
                "--node-lease-duration-seconds=40".into(),
                "--cidr=10.244.0.0/16".into(),
                format!("--server-address=127.0.0.1:{}", ports.kwok),
            ],
        )?;
        drop(tokens);

        self.bootstrap_objects(sh, &tools)?;
        self.install_crds(sh, &tools)?;
        if let Some(node) = &node {
            node.start(sh, &tools, &self.dir)
                .with_context(|| format!("starting the real node (logs in {})", node.dir.join("logs").display()))?;
        }
        for c in COMPONENTS {
            if !self.running().contains_key(c) {
                bail!("{c} exited during start-up; see {}", self.log_file(c).display());
            }
        }
        let real = match &node {
            Some(n) => format!(
                " and the real node {} ({}; pods tolerating {}:NoSchedule)",
                node::NODE_NAME,
                n.node_ip(),
                node::TAINT_KEY
            ),
            None => String::new(),
        };
        eprintln!(
            "xtask: control plane up in {:.0?} ({} fake nodes{real})\n\n  export KUBECONFIG={}\n  kubectl get nodes\n\nStop it with `cargo xtask cluster down`; logs in {}",
            t0.elapsed(),
            NODES,
            self.kubeconfig().display(),
            self.dir.join("logs").display()
        );
        Ok(())
    }

    fn spawn(&self, name: &str, bin: &Path, args: &[String]) -> Result<()> {
        let mut command = Command::new(bin);
        command.args(args);
        spawn_logged(command, &self.log_file(name), &self.pid_file(name))
            .with_context(|| format!("starting {}", bin.display()))
    }

    /// CA, serving certificate, ServiceAccount signing key, static tokens and
    /// one kubeconfig per client.
    fn write_credentials(&self, sh: &Shell, ports: &Ports, api_host: &str) -> Result<BTreeMap<&'static str, String>> {
        let pki = self.dir.join("pki");
        let _d = sh.push_dir(&pki);
        let quiet = |c: xshell::Cmd<'_>| c.quiet().ignore_stdout().ignore_stderr().run();
        quiet(cmd!(
            sh,
            "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 -subj /CN=craftplane-local-ca"
        ))?;
        quiet(cmd!(
            sh,
            "openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj /CN=kube-apiserver"
        ))?;
        sh.write_file(
            "apiserver.ext",
            format!(
                "subjectAltName=IP:127.0.0.1,IP:{api_host},IP:{SERVICE_IP},DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment\n"
            ),
        )?;
        quiet(cmd!(
            sh,
            "openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt -days 3650 -extfile apiserver.ext"
        ))?;
        // The API server's client certificate towards kubelets.
        quiet(cmd!(
            sh,
            "openssl req -newkey rsa:2048 -nodes -keyout kubelet-client.key -out kubelet-client.csr -subj /O=system:masters/CN=kube-apiserver-kubelet-client"
        ))?;
        sh.write_file(
            "kubelet-client.ext",
            "extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature,keyEncipherment\n",
        )?;
        quiet(cmd!(
            sh,
            "openssl x509 -req -in kubelet-client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out kubelet-client.crt -days 3650 -extfile kubelet-client.ext"
        ))?;
        quiet(cmd!(sh, "openssl genrsa -out sa.key 2048"))?;
        quiet(cmd!(sh, "openssl rsa -in sa.key -pubout -out sa.pub"))?;

        // user → groups. The admin is a cluster-admin through system:masters;
        // the controller-manager and scheduler use their bootstrap RBAC roles.
        let users: [(&'static str, &str, &str); 10] = [
            ("kubeconfig", "craftplane-admin", "system:masters"),
            // The operator's own identity, so its requests can be told apart
            // (audit log) from the tests' and people's. Not an admin: it holds
            // only the chart's rules (see `operator_rbac`).
            ("operator.kubeconfig", OPERATOR_USERS[0], ""),
            // A second operator replica's identity (leader-election tests).
            ("operator2.kubeconfig", OPERATOR_USERS[1], ""),
            ("kube-controller-manager.kubeconfig", "system:kube-controller-manager", ""),
            ("kube-scheduler.kubeconfig", "system:kube-scheduler", ""),
            ("kwok.kubeconfig", "kwok", "system:masters"),
            // The real node: the Node authorizer knows the kubelet by name;
            // kube-proxy has the bootstrap role system:node-proxier.
            ("kubelet.kubeconfig", "system:node:craftplane-node", "system:nodes"),
            ("kube-proxy.kubeconfig", "system:kube-proxy", ""),
            ("coredns.kubeconfig", "system:coredns", "system:masters"),
            // The NetworkPolicy engine: read-only RBAC applied by the node.
            ("kube-router.kubeconfig", node::KUBE_ROUTER_USER, ""),
        ];
        let ca = pki.join("ca.crt");
        let ca = ca.display();
        let mut csv = String::new();
        let mut tokens = BTreeMap::new();
        for (file, user, groups) in users {
            let token = random_hex(24)?;
            csv.push_str(&format!("{token},{user},{user},\"{groups}\"\n"));
            let kubeconfig = format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: craftplane-local\n  cluster:\n    server: https://{api_host}:{port}\n    certificate-authority: {ca}\nusers:\n- name: {user}\n  user:\n    token: {token}\ncontexts:\n- name: craftplane-local\n  context:\n    cluster: craftplane-local\n    user: {user}\ncurrent-context: craftplane-local\n",
                port = ports.apiserver
            );
            write_private(&self.dir.join(file), &kubeconfig)?;
            tokens.insert(file, token);
        }
        write_private(&self.dir.join("tokens.csv"), &csv)?;
        // Audit every write, and every request of the operator identities
        // (metadata only): tests and benchmarks count the operator's requests.
        fs::write(
            self.dir.join("audit-policy.yaml"),
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: Metadata\n  users: [craftplane-operator, craftplane-operator-2]\n- level: Metadata\n  verbs: [create, update, patch, delete, deletecollection]\n- level: None\n",
        )?;
        Ok(tokens)
    }

    /// Fake nodes, a default StorageClass (hostPath provisioner of the
    /// controller-manager), the operator identities' RBAC, then waits for
    /// the nodes to be Ready.
    fn bootstrap_objects(&self, sh: &Shell, tools: &Tools) -> Result<()> {
        let mut yaml = operator_rbac()?;
        yaml.push_str(
            "---\napiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata:\n  name: standard\n  annotations:\n    storageclass.kubernetes.io/is-default-class: \"true\"\nprovisioner: kubernetes.io/host-path\nreclaimPolicy: Delete\nvolumeBindingMode: Immediate\n",
        );
        for i in 0..NODES {
            yaml.push_str(&format!(
                "---\napiVersion: v1\nkind: Node\nmetadata:\n  name: kwok-node-{i}\n  annotations:\n    kwok.x-k8s.io/node: fake\n    node.alpha.kubernetes.io/ttl: \"0\"\n  labels:\n    kubernetes.io/arch: amd64\n    kubernetes.io/hostname: kwok-node-{i}\n    kubernetes.io/os: linux\n    kubernetes.io/role: agent\n    node-role.kubernetes.io/agent: \"\"\n    type: kwok\nstatus:\n  allocatable:\n    cpu: \"1000\"\n    memory: 4Ti\n    pods: \"5000\"\n    ephemeral-storage: 100Ti\n  capacity:\n    cpu: \"1000\"\n    memory: 4Ti\n    pods: \"5000\"\n    ephemeral-storage: 100Ti\n"
            ));
        }
        let file = self.dir.join("bootstrap.yaml");
        fs::write(&file, yaml)?;
        let kubectl = &tools.kubectl;
        let kc = self.kubeconfig();
        // The apiserver may still be creating its bootstrap RBAC; retry a little.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match cmd!(sh, "{kubectl} --kubeconfig {kc} apply -f {file}").quiet().ignore_stdout().run() {
                Ok(()) => break,
                Err(e) if Instant::now() > deadline => return Err(e.into()),
                Err(_) => std::thread::sleep(Duration::from_millis(500)),
            }
        }
        cmd!(sh, "{kubectl} --kubeconfig {kc} wait --for=condition=Ready node --all --timeout=120s")
            .quiet()
            .ignore_stdout()
            .run()
            .context("fake nodes did not become Ready (is kwok running? see its log)")?;
        // The default ServiceAccount must exist before pods can be created.
        wait_for("default ServiceAccount", Duration::from_secs(60), || {
            cmd!(sh, "{kubectl} --kubeconfig {kc} get serviceaccount default -n default")
                .quiet()
                .ignore_stdout()
                .ignore_stderr()
                .run()
                .is_ok()
        })?;
        Ok(())
    }

    /// Installs craftplane's CRDs (crds/craftplane.yaml) and waits until
    /// they are Established.
    pub fn install_crds(&self, sh: &Shell, tools: &Tools) -> Result<()> {
        let kubectl = &tools.kubectl;
        let kc = self.kubeconfig();
        let crds = crate::project_root().join("crds").join("craftplane.yaml");
        cmd!(sh, "{kubectl} --kubeconfig {kc} apply --server-side --force-conflicts -f {crds}")
            .quiet()
            .ignore_stdout()
            .run()?;
        cmd!(sh, "{kubectl} --kubeconfig {kc} wait --for=condition=Established crd -l app.kubernetes.io/part-of=craftplane --timeout=60s")
            .quiet()
            .ignore_stdout()
            .run()?;
        // Discovery lags Established by a moment; wait until kubectl sees the kinds.
        wait_for("craftplane kinds in API discovery", Duration::from_secs(30), || {
            cmd!(sh, "{kubectl} --kubeconfig {kc} get craftplane -A")
                .quiet()
                .ignore_stdout()
                .ignore_stderr()
                .run()
                .is_ok()
        })
    }

    /// Stops every component (SIGTERM, then SIGKILL) and removes the state.
    pub fn down(&self) -> Result<()> {
        // The real node first, while the API server can still take its pods.
        if let Some(node) = self.node() {
            node.stop(&Tools::locate().kubectl, &self.kubeconfig());
        }
        for c in COMPONENTS.iter().rev() {
            if let Some(pid) = read_pid(&self.pid_file(c)) {
                stop_process(pid, c)?;
            }
        }
        let left: Vec<_> = COMPONENTS
            .iter()
            .filter_map(|c| read_pid(&self.pid_file(c)).filter(|p| process_alive(*p, c)).map(|p| format!("{c} ({p})")))
            .collect();
        if !left.is_empty() {
            bail!("could not stop: {}", left.join(", "));
        }
        // The hostPath provisioner writes volumes under /tmp/hostpath_pv.
        node::unmount_under(&self.dir);
        if self.dir.exists() {
            fs::remove_dir_all(&self.dir).with_context(|| format!("removing {}", self.dir.display()))?;
        }
        Ok(())
    }

    pub fn status(&self, sh: &Shell) -> Result<bool> {
        let tools = Tools::locate();
        let running = self.running();
        for c in COMPONENTS {
            match running.get(c) {
                Some(pid) => println!("{c:<24} running (pid {pid})"),
                None => println!("{c:<24} stopped"),
            }
        }
        if let Some(node) = self.node() {
            let up = node.running();
            for c in node::COMPONENTS {
                let state = if up.contains(&c) { "running" } else { "stopped" };
                println!("{:<24} {state} (real node {}, {})", c, node::NODE_NAME, node.node_ip());
            }
        }
        let ready = running.len() == COMPONENTS.len() && self.kubectl_raw(sh, &tools, "/readyz").is_ok();
        println!("{:<24} {}", "api /readyz", if ready { "ok" } else { "not ready" });
        if ready {
            println!("\nexport KUBECONFIG={}", self.kubeconfig().display());
        }
        Ok(ready)
    }
}

/// The users the operator runs as in tests, benchmarks and `dev` (the e2e
/// suite runs it as the chart's ServiceAccount instead).
pub const OPERATOR_USERS: [&str; 2] = ["craftplane-operator", "craftplane-operator-2"];

/// The operator identities' RBAC: exactly the chart's ClusterRole (the rules
/// `cargo xtask crds` generates from src/controller/rbac.rs into
/// charts/craftplane/files/operator-rules.yaml), and the chart's
/// rules on Leases (leader election, wake requests), cluster-wide here because each test runs
/// its operator in a namespace of its own. A rule missing from rbac.rs makes
/// the operator's request fail in the integration tests as it would in a
/// real install. Named apart from the chart's objects so the e2e suite's
/// `helm install` on its own control plane never meets them.
fn operator_rbac() -> Result<String> {
    let file = crate::project_root().join("charts/craftplane/files/operator-rules.yaml");
    let rules = fs::read_to_string(&file).with_context(|| format!("read {}", file.display()))?;
    let rules: String = rules.lines().map(|l| format!("  {l}\n")).collect();
    let subjects: String = OPERATOR_USERS
        .iter()
        .map(|u| format!("  - apiGroup: rbac.authorization.k8s.io\n    kind: User\n    name: {u}\n"))
        .collect();
    let mut yaml = String::new();
    for (name, rules) in [
        ("craftplane-test-operator", rules.as_str()),
        (
            "craftplane-test-operator-leases",
            "  - apiGroups: [\"coordination.k8s.io\"]\n    resources: [\"leases\"]\n    verbs: [\"get\", \"list\", \"watch\", \"create\", \"update\", \"patch\", \"delete\"]\n",
        ),
    ] {
        yaml.push_str(&format!(
            "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: {name}\nrules:\n{rules}---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: {name}\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: {name}\nsubjects:\n{subjects}"
        ));
    }
    Ok(yaml)
}

/// Stops clusters left by test runs whose process is gone (an interrupted
/// `cargo xtask test`); their directory names end in the owner's pid.
pub fn reap_abandoned_test_clusters() {
    let Ok(entries) = fs::read_dir(tools::cache_dir().join("clusters")) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(pid) = ["test-", "lifecycle-", "e2e-"].iter().find_map(|p| name.strip_prefix(p)) else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("xtask: stopping abandoned cluster {name}");
            if let Err(err) = (Cluster { dir: e.path(), real_node: true }).down() {
                eprintln!("xtask: warning: {err:#}");
            }
        }
    }
}

struct Ports {
    apiserver: u16,
    etcd_client: u16,
    etcd_peer: u16,
    controller_manager: u16,
    scheduler: u16,
    kwok: u16,
}

impl Ports {
    /// Free loopback ports, held until all are chosen so they differ.
    fn allocate() -> Result<Ports> {
        let listeners: Vec<TcpListener> = (0..6).map(|_| TcpListener::bind("127.0.0.1:0")).collect::<Result<_, _>>()?;
        let p: Vec<u16> = listeners.iter().map(|l| l.local_addr().map(|a| a.port())).collect::<Result<_, _>>()?;
        Ok(Ports {
            apiserver: p[0],
            etcd_client: p[1],
            etcd_peer: p[2],
            controller_manager: p[3],
            scheduler: p[4],
            kwok: p[5],
        })
    }
}

pub(crate) fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    bail!("{what} not ready after {timeout:?}")
}

/// Starts a component with its output in `log`, in a process group of its
/// own (a Ctrl-C of the caller does not take it down, `cluster down` does),
/// and records its pid.
pub(crate) fn spawn_logged(mut command: Command, log: &Path, pid_file: &Path) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let log = fs::File::create(log)?;
    let child = command.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log).process_group(0).spawn()?;
    fs::write(pid_file, child.id().to_string())?;
    Ok(())
}

pub(crate) fn read_pid(path: &Path) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Alive and really our component (not a recycled pid).
pub(crate) fn process_alive(pid: u32, component: &str) -> bool {
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // A zombie (state Z) has exited already.
    let state = stat.rsplit(')').next().and_then(|s| s.split_whitespace().next());
    if state == Some("Z") {
        return false;
    }
    String::from_utf8_lossy(&cmdline).contains(component)
}

pub(crate) fn stop_process(pid: u32, component: &str) -> Result<()> {
    if !process_alive(pid, component) {
        return Ok(());
    }
    let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if !process_alive(pid, component) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
    std::thread::sleep(Duration::from_millis(300));
    Ok(())
}

fn write_private(path: &Path, content: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::write(path, content)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    Ok(())
}

fn random_hex(bytes: usize) -> Result<String> {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every process whose command line mentions `needle`.
    fn processes_mentioning(needle: &str) -> Vec<u32> {
        let mut out = Vec::new();
        for e in fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline"))
                && String::from_utf8_lossy(&cmdline).contains(needle)
                && process_alive_any(pid)
            {
                out.push(pid);
            }
        }
        out
    }

    fn process_alive_any(pid: u32) -> bool {
        fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.rsplit(')').next().and_then(|s| s.split_whitespace().next()) != Some("Z"))
            .unwrap_or(false)
    }

    /// Host state the real node must leave as it found it.
    fn host_snapshot() -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        for s in ["vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops", "net/ipv4/ip_forward"] {
            m.insert(s.to_string(), fs::read_to_string(format!("/proc/sys/{s}")).unwrap_or_default());
        }
        let links: Vec<_> = fs::read_dir("/sys/class/net")
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        m.insert("links".into(), links.join(","));
        let chains = |table: &str| {
            let out = Command::new("iptables").args(["-t", table, "-S"]).output().unwrap();
            String::from_utf8_lossy(&out.stdout).to_string()
        };
        m.insert("iptables filter".into(), chains("filter"));
        m.insert("iptables nat".into(), chains("nat"));
        // kube-router's sets live in the node's namespace, never here.
        let sets = Command::new("ipset").args(["list", "-n"]).output();
        m.insert("ipsets".into(), sets.map(|o| String::from_utf8_lossy(&o.stdout).to_string()).unwrap_or_default());
        for p in ["/var/lib/kubelet", "/var/lib/cni", "/run/containerd", "/run/netns"] {
            m.insert(p.into(), Path::new(p).exists().to_string());
        }
        let mut points: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .collect();
        points.sort();
        m.insert("mount points".into(), points.join(","));
        let cgroups: Vec<_> = fs::read_dir("/sys/fs/cgroup/memory")
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        m.insert("memory cgroups".into(), cgroups.join(","));
        m
    }

    #[test]
    fn up_is_idempotent_serves_craftplane_runs_real_pods_and_down_leaves_nothing() {
        /// Stops the cluster even when an assertion fails.
        struct Guard(PathBuf);
        impl Drop for Guard {
            fn drop(&mut self) {
                let _ = Cluster { dir: self.0.clone(), real_node: true }.down();
            }
        }
        let before = host_snapshot();
        let alone = other_real_node_running().is_none();
        let sh = Shell::new().unwrap();
        let cluster = Cluster::ephemeral(&format!("lifecycle-{}", std::process::id()));
        let _guard = Guard(cluster.dir.clone());
        cluster.up(&sh).expect("cluster up");
        let pids = cluster.running();
        assert_eq!(pids.len(), COMPONENTS.len(), "all components run: {pids:?}");
        let node = cluster.node().expect("real node");
        assert_eq!(node.running(), node::COMPONENTS.to_vec(), "node components run");
        // A second `up` finds it healthy and changes nothing.
        cluster.up(&sh).expect("second up");
        assert_eq!(cluster.running(), pids, "second up restarted something");

        let tools = Tools::locate();
        let kubectl = |args: &[&str]| {
            let out =
                Command::new(&tools.kubectl).arg("--kubeconfig").arg(cluster.kubeconfig()).args(args).output().unwrap();
            assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        kubectl(&["get", "craftplane", "-A"]);
        // RBAC is on: the admin may create pods, an unknown user may not list them.
        assert_eq!(kubectl(&["auth", "can-i", "create", "pods"]), "yes");
        let out = Command::new(&tools.kubectl)
            .arg("--kubeconfig")
            .arg(cluster.kubeconfig())
            .args(["auth", "can-i", "list", "pods", "--as", "someone"])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no");

        // The real node: Ready, tainted, labelled.
        let n = format!("node/{}", node::NODE_NAME);
        assert_eq!(kubectl(&["get", &n, "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}"]), "True");
        assert_eq!(kubectl(&["get", &n, "-o", "jsonpath={.spec.taints[0].key}"]), node::TAINT_KEY);
        assert_eq!(
            kubectl(&["get", &n, "-o", "jsonpath={.status.nodeInfo.kubeletVersion}"]),
            crate::versions::KUBERNETES
        );
        // A real container (the pause image) placed by toleration + selector;
        // a pod without them goes to a kwok node.
        let pod = cluster.dir.join("real-pod.yaml");
        fs::write(
            &pod,
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: real, namespace: default}}\nspec:\n  nodeSelector: {{{l}: {v}}}\n  tolerations: [{{key: {t}, operator: Exists, effect: NoSchedule}}]\n  containers: [{{name: c, image: \"{img}\", imagePullPolicy: Never}}]\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: fake, namespace: default}}\nspec:\n  containers: [{{name: c, image: \"{img}\"}}]\n",
                l = node::LABEL.0,
                v = node::LABEL.1,
                t = node::TAINT_KEY,
                img = crate::images::pause_image()
            ),
        )
        .unwrap();
        kubectl(&["apply", "-f", &pod.display().to_string()]);
        kubectl(&["wait", "--for=condition=Ready", "pod/real", "pod/fake", "--timeout=90s"]);
        assert_eq!(kubectl(&["get", "pod", "real", "-o", "jsonpath={.spec.nodeName}"]), node::NODE_NAME);
        assert!(kubectl(&["get", "pod", "fake", "-o", "jsonpath={.spec.nodeName}"]).starts_with("kwok-node-"));
        let ip = kubectl(&["get", "pod", "real", "-o", "jsonpath={.status.podIP}"]);
        assert!(ip.starts_with(&format!("10.88.{}.", node.index)), "pod IP {ip} outside {}", node.pod_cidr());
        let cid = kubectl(&["get", "pod", "real", "-o", "jsonpath={.status.containerStatuses[0].containerID}"]);
        let tasks = node.ctr().args(["tasks", "ls"]).output().unwrap();
        let id = cid.trim_start_matches("containerd://");
        assert!(
            String::from_utf8_lossy(&tasks.stdout).lines().any(|l| l.starts_with(id) && l.contains("RUNNING")),
            "container {id} is not a running containerd task: {}",
            String::from_utf8_lossy(&tasks.stdout)
        );
        // From the node's network (where pods are): cluster DNS through the
        // kube-dns Service, and the API server through the kubernetes Service.
        let probe = r#"
import socket, struct, sys
q = struct.pack('>HHHHHH', 0x1234, 0x0100, 1, 0, 0, 0)
for part in 'kubernetes.default.svc.cluster.local'.split('.'):
    q += bytes([len(part)]) + part.encode()
q += b'\0' + struct.pack('>HH', 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
# UDP: a query lost while the node's rules are (re)written is asked again, as resolvers do.
for attempt in range(5):
    s.sendto(q, (sys.argv[1], 53))
    try:
        r, _ = s.recvfrom(512)
        break
    except socket.timeout:
        if attempt == 4:
            raise
answers = struct.unpack('>H', r[6:8])[0]
print('.'.join(str(b) for b in r[-4:]) if answers else 'NXDOMAIN')
t = socket.create_connection(('10.96.0.1', 443), timeout=5); t.close()
print('tcp ok')
"#;
        // CoreDNS and the Service rules may still be settling right after
        // start: the probe is repeated for up to two minutes before it
        // counts (a CI run with three test binaries at once once needed
        // more than one).
        let probe_deadline = Instant::now() + Duration::from_secs(120);
        let out = loop {
            let out = Command::new("nsenter")
                .arg(format!("--net=/run/netns/{}", node.netns()))
                .args(["python3", "-c", probe, node::DNS_SERVICE_IP])
                .output()
                .unwrap();
            if String::from_utf8_lossy(&out.stdout).trim() == format!("{SERVICE_IP}\ntcp ok")
                || Instant::now() > probe_deadline
            {
                break out;
            }
            std::thread::sleep(Duration::from_secs(2));
        };
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("{SERVICE_IP}\ntcp ok"),
            "DNS/Service probe from the node's network: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            ["coredns", "kube-proxy"]
                .iter()
                .map(|c| {
                    let log = fs::read_to_string(node.log(c)).unwrap_or_default();
                    format!("--- {c}.log (last lines) ---\n{}", crate::e2e::tail(&log, 15))
                })
                .collect::<Vec<_>>()
                .join("\n")
        );

        // NetworkPolicies are enforced (kube-router): a TCP connect from pod
        // `real` to a listener in another namespace's pod passes, fails
        // under a default-deny ingress policy there, passes once it is gone.
        assert!(node.has_chain(node::POLICY_CHAIN), "kube-router's {} chain", node::POLICY_CHAIN);
        let guarded = cluster.dir.join("guarded-pod.yaml");
        fs::write(
            &guarded,
            format!(
                "apiVersion: v1\nkind: Namespace\nmetadata: {{name: np-check}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: guarded, namespace: np-check}}\nspec:\n  nodeSelector: {{{l}: {v}}}\n  tolerations: [{{key: {t}, operator: Exists, effect: NoSchedule}}]\n  containers: [{{name: c, image: \"{img}\", imagePullPolicy: Never}}]\n",
                l = node::LABEL.0,
                v = node::LABEL.1,
                t = node::TAINT_KEY,
                img = crate::images::pause_image()
            ),
        )
        .unwrap();
        kubectl(&["apply", "-f", &guarded.display().to_string()]);
        kubectl(&["wait", "--for=condition=Ready", "pod/guarded", "-n", "np-check", "--timeout=90s"]);
        let netns_of = |ns: &str, pod: &str| {
            let cid =
                kubectl(&["get", "pod", pod, "-n", ns, "-o", "jsonpath={.status.containerStatuses[0].containerID}"]);
            let id = cid.trim_start_matches("containerd://").to_string();
            let tasks = node.ctr().args(["tasks", "ls"]).output().unwrap();
            let pid = String::from_utf8_lossy(&tasks.stdout)
                .lines()
                .find(|l| l.starts_with(&id))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
                .unwrap_or_else(|| panic!("no task for {ns}/{pod}"));
            format!("/proc/{pid}/ns/net")
        };
        let target = kubectl(&["get", "pod", "guarded", "-n", "np-check", "-o", "jsonpath={.status.podIP}"]);
        // The listener: a host python in the guarded pod's network namespace.
        struct Killed(std::process::Child);
        impl Drop for Killed {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let listener = Command::new("nsenter")
            .arg(format!("--net={}", netns_of("np-check", "guarded")))
            .args(["python3", "-c"])
            .arg("import socket\ns = socket.create_server(('0.0.0.0', 8080))\nwhile True: s.accept()[0].close()")
            .spawn()
            .map(Killed)
            .unwrap();
        let from = netns_of("default", "real");
        let connects = || {
            Command::new("nsenter")
                .arg(format!("--net={from}"))
                .args(["python3", "-c", "import socket, sys; socket.create_connection((sys.argv[1], 8080), timeout=2)"])
                .arg(&target)
                .output()
                .unwrap()
                .status
                .success()
        };
        let settles = |want: bool| {
            wait_for(if want { "connect allowed" } else { "connect denied" }, Duration::from_secs(60), || {
                connects() == want
            })
        };
        settles(true).expect("pod-to-pod TCP without a policy");
        let deny = cluster.dir.join("deny.yaml");
        fs::write(
            &deny,
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny-all, namespace: np-check}\nspec: {podSelector: {}, policyTypes: [Ingress]}\n",
        )
        .unwrap();
        kubectl(&["apply", "-f", &deny.display().to_string()]);
        settles(false).expect("a default-deny ingress policy stops the connect");
        kubectl(&["delete", "-f", &deny.display().to_string()]);
        settles(true).expect("the connect passes again once the policy is gone");
        drop(listener);

        let dir = cluster.dir.display().to_string();
        let netns = node.netns();
        cluster.down().expect("cluster down");
        for (c, pid) in &pids {
            assert!(!process_alive(*pid, c), "{c} ({pid}) still runs after down");
        }
        assert_eq!(processes_mentioning(&dir), Vec::<u32>::new(), "processes left behind");
        assert!(!cluster.dir.exists(), "state directory removed");
        assert!(!Path::new(&format!("/run/netns/{netns}")).exists(), "network namespace {netns} left behind");
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mounts.contains(&dir), "mounts left under {dir}");
        if alone && other_real_node_running().is_none() {
            assert_eq!(host_snapshot(), before, "the host differs after down");
        } else {
            // Another real node (a dev cluster) shares the host: host-wide
            // state is restored when the last one stops, so nothing here can
            // be compared. Not a pass: counted as skipped by `cargo xtask
            // test`, a failure anywhere else.
            crate::skipped("host-wide restore after `cluster down` not compared: another real node ran on this host");
        }
    }

    fn other_real_node_running() -> Option<PathBuf> {
        fs::read_dir(tools::cache_dir().join("clusters"))
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| Node::of(p).is_some_and(|n| !n.running().is_empty()))
    }
}

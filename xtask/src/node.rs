//! The real node of the local control plane: containerd + runc + CNI
//! (Debian's packages), a kubelet and kube-proxy (built from the pinned
//! Kubernetes module), CoreDNS, and kube-router's policy controller as the
//! NetworkPolicy engine, so pods on it run real containers and
//! NetworkPolicies are enforced between them.
//!
//! Everything the node does to networking happens inside a network
//! namespace of its own (`craftplane-<n>`), joined to the host by one veth
//! pair: the pods' bridge, kube-proxy's, the kubelet's and kube-router's
//! iptables chains, kube-router's ipsets, its `ip_forward` and
//! bridge-netfilter sysctls live and die with that namespace. The host keeps `ip_forward` off, so nothing can leave the
//! machine; it only gains an address on the veth (where the API server and
//! the tests' host-side servers listen) and a route to the pod subnet.
//!
//! | what | address |
//! |---|---|
//! | host end of the veth (API server, test servers) | `10.87.<n>.1` |
//! | node end of the veth (node IP, kubelet, CoreDNS) | `10.87.<n>.2` |
//! | pods (CNI bridge + host-local) | `10.88.<n>.0/24` |
//! | cluster DNS Service `kube-system/kube-dns` | `10.96.0.10` → CoreDNS |
//!
//! Pods land here only if they tolerate the taint `craftplane.io/real-node`
//! (NoSchedule) and select the label `craftplane.io/node: real`; every other
//! pod goes to the kwok nodes as before.
//!
//! What the kubelet changes on the host beyond that (three sysctls, its
//! cgroups under `/craftplane-<n>`, mounts under the cluster directory,
//! `/var/lib/kubelet/device-plugins`, `/var/lib/cni`) is undone by
//! [`Node::stop`].

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use xshell::{Shell, cmd};

use crate::cluster::wait_for;
use crate::tools::{self, Tools};

/// The real node's name.
pub const NODE_NAME: &str = "craftplane-node";
/// The API identity kube-router's policy controller uses (read-only RBAC).
pub const KUBE_ROUTER_USER: &str = "craftplane:kube-router";
/// Taint key (effect NoSchedule) and label that place a pod on the real node.
pub const TAINT_KEY: &str = "craftplane.io/real-node";
pub const LABEL: (&str, &str) = ("craftplane.io/node", "real");
/// ClusterIP of the `kube-dns` Service.
pub const DNS_SERVICE_IP: &str = "10.96.0.10";
/// StorageClass of the real node's volumes: `local` PersistentVolumes (the
/// kubelet gives them the pod's fsGroup, which the controller-manager's
/// hostPath provisioner, mode 0750 root, cannot), bound when a pod is
/// scheduled.
pub const STORAGE_CLASS: &str = "craftplane-real-node";
/// How many such volumes are made.
const VOLUMES: usize = 12;

/// Host sysctls the kubelet sets (it refuses to run with
/// `protectKernelDefaults` unless they already have its values).
const KUBELET_SYSCTLS: [&str; 3] = ["vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops"];
/// Host paths the kubelet, CNI or `ip netns` create outside the cluster
/// directory (`ip netns add` also bind-mounts `/run/netns` onto itself).
const HOST_PATHS: [&str; 4] = ["/var/lib/kubelet", "/var/lib/cni", "/run/containerd", "/run/netns"];
/// cgroup v1 hierarchies the kubelet uses.
const CGROUP_HIERARCHIES: [&str; 9] =
    ["cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "systemd"];

/// The node's processes, in start order.
pub const COMPONENTS: [&str; 5] = ["containerd", "kubelet", "kube-proxy", "coredns", "kube-router"];
/// The chain kube-router's policy controller hooks into FORWARD once it has
/// synced (pod-to-pod traffic on the bridge passes it).
pub const POLICY_CHAIN: &str = "KUBE-ROUTER-FORWARD";

/// One real node, its state under `<cluster dir>/node`.
#[derive(Clone, Debug)]
pub struct Node {
    pub dir: PathBuf,
    /// `n` of the addresses above (1..=250).
    pub index: u8,
}

impl Node {
    /// The node of a cluster directory, if its network was set up.
    pub fn of(cluster_dir: &Path) -> Option<Node> {
        let dir = cluster_dir.join("node");
        let index = fs::read_to_string(dir.join("index")).ok()?.trim().parse().ok()?;
        Some(Node { dir, index })
    }

    /// Host-side address (API server and test servers listen here).
    pub fn host_ip(&self) -> String {
        format!("10.87.{}.1", self.index)
    }

    /// The node's own address.
    pub fn node_ip(&self) -> String {
        format!("10.87.{}.2", self.index)
    }

    pub fn pod_cidr(&self) -> String {
        format!("10.88.{}.0/24", self.index)
    }

    pub fn netns(&self) -> String {
        format!("craftplane-{}", self.index)
    }

    fn veth_host(&self) -> String {
        format!("cp{}-host", self.index)
    }

    fn veth_node(&self) -> String {
        format!("cp{}-node", self.index)
    }

    fn cgroup_root(&self) -> String {
        format!("craftplane-{}", self.index)
    }

    pub fn containerd_socket(&self) -> PathBuf {
        self.dir.join("containerd").join("containerd.sock")
    }

    /// Chooses a free index and creates the namespace, veth and routes
    /// (after [`ensure_packages`]).
    pub fn create_network(cluster_dir: &Path) -> Result<Node> {
        let dir = cluster_dir.join("node");
        fs::create_dir_all(&dir)?;
        let index = (1..=250u8)
            .find(|i| {
                !Path::new(&format!("/run/netns/craftplane-{i}")).exists() && !link_exists(&format!("cp{i}-host"))
            })
            .context("no free real-node index (250 real nodes on this host?)")?;
        fs::write(dir.join("index"), index.to_string())?;
        let node = Node { dir, index };
        node.remember_host_state()?;
        let (ns, host, peer) = (node.netns(), node.veth_host(), node.veth_node());
        let host_cidr = format!("{}/24", node.host_ip());
        let node_cidr = format!("{}/24", node.node_ip());
        let gw = node.host_ip();
        let pods = node.pod_cidr();
        let node_ip = node.node_ip();
        let steps: Vec<Vec<String>> = vec![
            args(&["ip", "netns", "add", &ns]),
            args(&["ip", "link", "add", &host, "type", "veth", "peer", "name", &peer]),
            args(&["ip", "link", "set", &peer, "netns", &ns]),
            args(&["ip", "addr", "add", &host_cidr, "dev", &host]),
            args(&["ip", "link", "set", &host, "up"]),
            args(&["ip", "-n", &ns, "link", "set", "lo", "up"]),
            args(&["ip", "-n", &ns, "addr", "add", &node_cidr, "dev", &peer]),
            args(&["ip", "-n", &ns, "link", "set", &peer, "up"]),
            args(&["ip", "-n", &ns, "route", "add", "default", "via", &gw]),
            // The host reaches pods (API server proxy, kubectl port-forward
            // needs nothing) through the node end.
            args(&["ip", "route", "add", &pods, "via", &node_ip]),
            // Inside the namespace only: forward between the pods' bridge
            // and the veth; bridged pod traffic passes iptables (Service
            // NAT between two pods on one bridge, and kube-router's
            // NetworkPolicy chains).
            args(&["ip", "netns", "exec", &ns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]),
            args(&["ip", "netns", "exec", &ns, "sysctl", "-q", "-w", "net.bridge.bridge-nf-call-iptables=1"]),
        ];
        for s in steps {
            run(&s)?;
        }
        Ok(node)
    }

    /// Writes the configuration and starts containerd, the kubelet,
    /// kube-proxy, CoreDNS and kube-router; waits until the node is Ready
    /// and kube-router has installed its chains.
    pub fn start(&self, sh: &Shell, tools: &Tools, cluster_dir: &Path) -> Result<()> {
        let d = &self.dir;
        for sub in
            ["containerd/root", "containerd/state", "cni/net.d", "cni/ipam", "kubelet", "pod-logs", "logs", "run"]
        {
            fs::create_dir_all(d.join(sub))?;
        }
        self.write_cni()?;
        self.write_containerd_config()?;
        self.create_cgroups()?;
        self.spawn_in_netns(
            "containerd",
            Path::new("containerd"),
            &[format!("--config={}", d.join("containerd.toml").display())],
        )?;
        wait_for("containerd socket", Duration::from_secs(30), || {
            self.ctr().args(["version"]).output().map(|o| o.status.success()).unwrap_or(false)
        })?;
        let pause = crate::images::ensure_pause(sh)?;
        self.import(&[&pause])?;

        let pki = cluster_dir.join("pki");
        fs::write(d.join("resolv.conf"), format!("nameserver {DNS_SERVICE_IP}\n"))?;
        fs::write(
            d.join("kubelet.yaml"),
            format!(
                "apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /{cgroup_root}
containerRuntimeEndpoint: unix://{sock}
address: {ip}
port: 10250
readOnlyPort: 0
healthzBindAddress: {ip}
healthzPort: 10248
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: {ca}}}
authorization: {{mode: Webhook}}
clusterDomain: cluster.local
clusterDNS: [{DNS_SERVICE_IP}]
resolvConf: {resolv}
podLogsDir: {logs}
registerWithTaints:
- {{key: {TAINT_KEY}, value: \"true\", effect: NoSchedule}}
evictionHard: {{memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
maxPods: 40
failSwapOn: false
",
                cgroup_root = self.cgroup_root(),
                sock = self.containerd_socket().display(),
                ip = self.node_ip(),
                ca = pki.join("ca.crt").display(),
                resolv = d.join("resolv.conf").display(),
                logs = d.join("pod-logs").display(),
            ),
        )?;
        self.spawn_in_netns(
            "kubelet",
            &tools.kubelet,
            &[
                format!("--config={}", d.join("kubelet.yaml").display()),
                format!("--kubeconfig={}", cluster_dir.join("kubelet.kubeconfig").display()),
                format!("--root-dir={}", d.join("kubelet").display()),
                format!("--cert-dir={}", d.join("kubelet-pki").display()),
                format!("--node-ip={}", self.node_ip()),
                format!("--hostname-override={NODE_NAME}"),
                format!("--node-labels={}={}", LABEL.0, LABEL.1),
                "--v=1".into(),
            ],
        )?;
        fs::write(
            d.join("kube-proxy.yaml"),
            format!(
                "apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {{kubeconfig: {kc}}}
hostnameOverride: {NODE_NAME}
bindAddress: {ip}
healthzBindAddress: {ip}:10256
metricsBindAddress: {ip}:10249
mode: iptables
clusterCIDR: {pods}
conntrack: {{maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}}
",
                kc = cluster_dir.join("kube-proxy.kubeconfig").display(),
                ip = self.node_ip(),
                pods = self.pod_cidr(),
            ),
        )?;
        self.spawn_in_netns(
            "kube-proxy",
            &tools.kube_proxy,
            &[format!("--config={}", d.join("kube-proxy.yaml").display())],
        )?;
        fs::write(
            d.join("Corefile"),
            format!(
                ".:53 {{\n    bind {ip}\n    errors\n    kubernetes cluster.local in-addr.arpa ip6.arpa {{\n        kubeconfig {kc} craftplane-local\n        pods insecure\n        fallthrough in-addr.arpa ip6.arpa\n    }}\n    loadbalance\n}}\n",
                ip = self.node_ip(),
                kc = cluster_dir.join("coredns.kubeconfig").display(),
            ),
        )?;
        self.spawn_in_netns("coredns", &tools.coredns, &["-conf".into(), d.join("Corefile").display().to_string()])?;

        let kubectl = &tools.kubectl;
        let kc = cluster_dir.join("kubeconfig");
        let dns = self.dir.join("kube-dns.yaml");
        fs::write(
            &dns,
            format!(
                "apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {{k8s-app: kube-dns, kubernetes.io/name: CoreDNS}}
spec:
  clusterIP: {DNS_SERVICE_IP}
  ports:
  - {{name: dns, port: 53, protocol: UDP}}
  - {{name: dns-tcp, port: 53, protocol: TCP}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kube-dns-coredns
  namespace: kube-system
  labels:
    kubernetes.io/service-name: kube-dns
    endpointslice.kubernetes.io/managed-by: craftplane-xtask
addressType: IPv4
endpoints:
- addresses: [{ip}]
  conditions: {{ready: true}}
  nodeName: {NODE_NAME}
ports:
- {{name: dns, port: 53, protocol: UDP}}
- {{name: dns-tcp, port: 53, protocol: TCP}}
",
                ip = self.node_ip()
            ),
        )?;
        cmd!(sh, "{kubectl} --kubeconfig {kc} apply -f {dns}").quiet().ignore_stdout().run()?;
        let volumes = self.write_volumes()?;
        cmd!(sh, "{kubectl} --kubeconfig {kc} apply -f {volumes}").quiet().ignore_stdout().run()?;
        let node = format!("node/{NODE_NAME}");
        wait_for("real node registered", Duration::from_secs(90), || {
            cmd!(sh, "{kubectl} --kubeconfig {kc} get {node}").quiet().ignore_stdout().ignore_stderr().run().is_ok()
        })
        .with_context(|| format!("see {}", self.log("kubelet").display()))?;
        cmd!(sh, "{kubectl} --kubeconfig {kc} wait --for=condition=Ready {node} --timeout=120s")
            .quiet()
            .ignore_stdout()
            .run()
            .with_context(|| format!("the real node did not become Ready; see {}", self.log("kubelet").display()))?;
        self.start_policy_engine(sh, tools, cluster_dir)?;
        for c in COMPONENTS {
            if !self.is_running(c) {
                bail!("{c} exited during start-up; see {}", self.log(c).display());
            }
        }
        Ok(())
    }

    /// kube-router, policy controller only (no routing, no service proxy:
    /// the bridge CNI and kube-proxy do those), in the node's namespace. It
    /// reads the Node object for the node's IP, so it starts once the node
    /// is registered; read-only RBAC of its own.
    fn start_policy_engine(&self, sh: &Shell, tools: &Tools, cluster_dir: &Path) -> Result<()> {
        let kubectl = &tools.kubectl;
        let kc = cluster_dir.join("kubeconfig");
        let rbac = self.dir.join("kube-router-rbac.yaml");
        fs::write(
            &rbac,
            format!(
                "apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: \"{KUBE_ROUTER_USER}\"}}
rules:
- apiGroups: [\"\"]
  resources: [namespaces, pods, services, endpoints, nodes]
  verbs: [get, list, watch]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: \"{KUBE_ROUTER_USER}\"}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: \"{KUBE_ROUTER_USER}\"}}
subjects:
- {{apiGroup: rbac.authorization.k8s.io, kind: User, name: \"{KUBE_ROUTER_USER}\"}}
"
            ),
        )?;
        cmd!(sh, "{kubectl} --kubeconfig {kc} apply -f {rbac}").quiet().ignore_stdout().run()?;
        self.spawn_in_netns(
            "kube-router",
            &tools.kube_router,
            &[
                format!("--kubeconfig={}", cluster_dir.join("kube-router.kubeconfig").display()),
                format!("--hostname-override={NODE_NAME}"),
                "--run-firewall=true".into(),
                "--run-router=false".into(),
                "--run-service-proxy=false".into(),
                "--enable-cni=false".into(),
                "--enable-ipv6=false".into(),
                format!("--service-cluster-ip-range={}", crate::cluster::SERVICE_CIDR),
                // Nothing listens outside the namespace's own processes.
                "--health-port=0".into(),
                "--metrics-port=0".into(),
                "--v=1".into(),
            ],
        )?;
        // Exited, not "not yet kube-router": right after the spawn the child
        // may not have exec'd yet (its command line is still ours).
        wait_for("kube-router's policy chains", Duration::from_secs(90), || {
            self.has_exited("kube-router") || self.has_chain(POLICY_CHAIN)
        })?;
        if self.has_exited("kube-router") || !self.is_running("kube-router") {
            let log = fs::read_to_string(self.log("kube-router")).unwrap_or_default();
            bail!("kube-router exited during start-up; the end of its log:\n{}", crate::e2e::tail(&log, 15));
        }
        Ok(())
    }

    /// Whether the node's namespace has this iptables chain (filter table).
    pub fn has_chain(&self, chain: &str) -> bool {
        Command::new("ip")
            .args(["netns", "exec", &self.netns(), "iptables", "-w", "5", "-S", chain])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// The StorageClass and the `local` PersistentVolumes of the real node
    /// (directories under the node's state, removed with it).
    fn write_volumes(&self) -> Result<PathBuf> {
        let mut yaml = format!(
            "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata:\n  name: {STORAGE_CLASS}\nprovisioner: kubernetes.io/no-provisioner\nvolumeBindingMode: WaitForFirstConsumer\nreclaimPolicy: Retain\n"
        );
        for i in 0..VOLUMES {
            let dir = self.dir.join("volumes").join(format!("pv-{i}"));
            fs::create_dir_all(&dir)?;
            yaml.push_str(&format!(
                "---\napiVersion: v1\nkind: PersistentVolume\nmetadata:\n  name: craftplane-real-node-{i}\n  labels: {{craftplane.io/real-node-volume: \"true\"}}\nspec:\n  capacity: {{storage: 20Gi}}\n  accessModes: [ReadWriteOnce]\n  persistentVolumeReclaimPolicy: Retain\n  storageClassName: {STORAGE_CLASS}\n  local: {{path: {path}}}\n  nodeAffinity:\n    required:\n      nodeSelectorTerms:\n      - matchExpressions:\n        - {{key: kubernetes.io/hostname, operator: In, values: [{NODE_NAME}]}}\n",
                path = dir.display()
            ));
        }
        let file = self.dir.join("volumes.yaml");
        fs::write(&file, yaml)?;
        Ok(file)
    }

    /// `ctr` against this node's containerd, namespace k8s.io (the CRI's).
    pub fn ctr(&self) -> Command {
        let mut c = Command::new("ctr");
        c.arg("--address").arg(self.containerd_socket()).args(["--namespace", "k8s.io"]);
        c
    }

    /// Imports OCI archives into the node's containerd (unpacked for the CRI).
    pub fn import(&self, archives: &[&Path]) -> Result<()> {
        for a in archives {
            // Unpacked into the default (overlayfs) snapshotter, the CRI's.
            let out = self.ctr().args(["images", "import"]).arg(a).output()?;
            if !out.status.success() {
                bail!("ctr images import {}: {}", a.display(), String::from_utf8_lossy(&out.stderr));
            }
        }
        Ok(())
    }

    fn write_cni(&self) -> Result<()> {
        let conf = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "craftplane",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "cni-craftplane",
                    "isGateway": true,
                    "ipMasq": false,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "dataDir": self.dir.join("cni/ipam").display().to_string(),
                        "ranges": [[{"subnet": self.pod_cidr()}]],
                        "routes": [{"dst": "0.0.0.0/0"}]
                    }
                },
                {"type": "loopback"}
            ]
        });
        fs::write(self.dir.join("cni/net.d/10-craftplane.conflist"), serde_json::to_string_pretty(&conf)?)?;
        Ok(())
    }

    fn write_containerd_config(&self) -> Result<()> {
        let d = &self.dir;
        fs::write(
            d.join("containerd.toml"),
            format!(
                "version = 2
root = \"{root}\"
state = \"{state}\"
disabled_plugins = [\"io.containerd.snapshotter.v1.btrfs\", \"io.containerd.snapshotter.v1.zfs\", \"io.containerd.snapshotter.v1.devmapper\", \"io.containerd.snapshotter.v1.aufs\", \"io.containerd.internal.v1.opt\"]
[grpc]
  address = \"{sock}\"
[ttrpc]
  address = \"{sock}.ttrpc\"
[debug]
  level = \"warn\"
[plugins.\"io.containerd.grpc.v1.cri\"]
  sandbox_image = \"{pause}\"
  # root here lacks CAP_SYS_RESOURCE: without this every sandbox fails
  # (runc: failed to update /proc/self/oom_score_adj).
  restrict_oom_score_adj = true
  # Pod network namespaces under the state dir (removed with it).
  netns_mounts_under_state_dir = true
  enable_selinux = false
  [plugins.\"io.containerd.grpc.v1.cri\".containerd]
    snapshotter = \"overlayfs\"
    default_runtime_name = \"runc\"
    [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]
      runtime_type = \"io.containerd.runc.v2\"
      [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins.\"io.containerd.grpc.v1.cri\".cni]
    bin_dir = \"/usr/lib/cni\"
    conf_dir = \"{cni}\"
",
                root = d.join("containerd/root").display(),
                state = d.join("containerd/state").display(),
                sock = self.containerd_socket().display(),
                pause = crate::images::pause_image(),
                cni = d.join("cni/net.d").display(),
            ),
        )?;
        Ok(())
    }

    fn create_cgroups(&self) -> Result<()> {
        for h in CGROUP_HIERARCHIES {
            let base = Path::new("/sys/fs/cgroup").join(h);
            if !base.exists() {
                continue;
            }
            let dir = base.join(self.cgroup_root());
            fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            if h == "cpuset" {
                // A new cpuset has no CPUs or memory nodes until given its parent's.
                for f in ["cpuset.cpus", "cpuset.mems"] {
                    let v = fs::read_to_string(base.join(f)).unwrap_or_default();
                    let _ = fs::write(dir.join(f), v.trim());
                }
            }
        }
        Ok(())
    }

    fn pid_file(&self, c: &str) -> PathBuf {
        self.dir.join("run").join(format!("{c}.pid"))
    }

    pub fn log(&self, c: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{c}.log"))
    }

    pub fn is_running(&self, c: &str) -> bool {
        crate::cluster::read_pid(&self.pid_file(c)).is_some_and(|p| crate::cluster::process_alive(p, c))
    }

    /// Whether the process started for `c` is gone (or a zombie), whatever
    /// its command line.
    fn has_exited(&self, c: &str) -> bool {
        let Some(pid) = crate::cluster::read_pid(&self.pid_file(c)) else { return true };
        match fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => stat.rsplit(')').next().and_then(|s| s.split_whitespace().next()) == Some("Z"),
            Err(_) => true,
        }
    }

    /// Every node component that runs.
    pub fn running(&self) -> Vec<&'static str> {
        COMPONENTS.into_iter().filter(|c| self.is_running(c)).collect()
    }

    fn spawn_in_netns(&self, name: &str, bin: &Path, args: &[String]) -> Result<()> {
        let mut command = Command::new("nsenter");
        command.arg(format!("--net=/run/netns/{}", self.netns())).arg("--").arg(bin).args(args);
        // nsenter execs the command: the pid recorded is the component's.
        crate::cluster::spawn_logged(command, &self.log(name), &self.pid_file(name))
            .with_context(|| format!("starting {name} in {}", self.netns()))
    }

    /// Stops the node and undoes everything it changed on the host.
    pub fn stop(&self, kubectl: &Path, kubeconfig: &Path) {
        // Pods first, through the kubelet, so sandboxes are torn down the
        // ordinary way (bounded: the rest is killed below).
        if self.is_running("kubelet") && kubeconfig.exists() {
            let selector = format!("spec.nodeName={NODE_NAME}");
            let _ = Command::new(kubectl)
                .arg("--kubeconfig")
                .arg(kubeconfig)
                .args(["delete", "pods", "-A", "--field-selector", &selector, "--force", "--grace-period=0"])
                .args(["--wait=false", "--request-timeout=5s"])
                .output();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                // No task left running (stopped sandboxes are removed below).
                let out = self.ctr().args(["tasks", "ls", "-q"]).output();
                if out.map(|o| o.status.success() && o.stdout.iter().all(|b| b.is_ascii_whitespace())).unwrap_or(true) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        for c in COMPONENTS.iter().rev() {
            if let Some(pid) = crate::cluster::read_pid(&self.pid_file(c)) {
                let _ = crate::cluster::stop_process(pid, c);
            }
        }
        // Whatever still runs in the node's cgroups (containers), then the
        // shims of this containerd.
        self.kill_cgroup_processes();
        let sock = self.containerd_socket().display().to_string();
        kill_matching(|cmdline| cmdline.contains("containerd-shim") && cmdline.contains(&sock));
        // Mounts under the node directory (kubelet volumes, rootfs overlays,
        // pod netns), deepest first.
        unmount_under(&self.dir);
        self.remove_cgroups();
        let _ = run(&args(&["ip", "netns", "delete", &self.netns()]));
        if link_exists(&self.veth_host()) {
            let _ = run(&args(&["ip", "link", "delete", &self.veth_host()]));
        }
        self.restore_host_state();
    }

    fn kill_cgroup_processes(&self) {
        for _ in 0..3 {
            let mut any = false;
            for h in ["pids", "freezer", "memory"] {
                let root = Path::new("/sys/fs/cgroup").join(h).join(self.cgroup_root());
                for procs in find_files(&root, "cgroup.procs") {
                    for pid in fs::read_to_string(&procs).unwrap_or_default().split_whitespace() {
                        any = true;
                        let _ = Command::new("kill").args(["-KILL", pid]).status();
                    }
                }
            }
            if !any {
                return;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    fn remove_cgroups(&self) {
        for h in CGROUP_HIERARCHIES {
            let root = Path::new("/sys/fs/cgroup").join(h).join(self.cgroup_root());
            if !root.exists() {
                continue;
            }
            let mut dirs = find_dirs(&root);
            dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
            for d in dirs {
                let _ = fs::remove_dir(&d);
            }
        }
    }

    /// Host-wide state to restore once the last real node on the host stops.
    fn host_state_file() -> PathBuf {
        tools::cache_dir().join("host-state-before-real-node.json")
    }

    fn remember_host_state(&self) -> Result<()> {
        let file = Self::host_state_file();
        if file.exists() && other_real_nodes(&self.dir).next().is_some() {
            return Ok(());
        }
        let mut state = serde_json::Map::new();
        for s in KUBELET_SYSCTLS {
            let v = fs::read_to_string(format!("/proc/sys/{s}")).unwrap_or_default();
            state.insert(s.into(), v.trim().into());
        }
        for p in HOST_PATHS {
            state.insert(p.into(), Path::new(p).exists().into());
        }
        fs::create_dir_all(tools::cache_dir())?;
        fs::write(file, serde_json::to_string_pretty(&state)?)?;
        Ok(())
    }

    fn restore_host_state(&self) {
        if other_real_nodes(&self.dir).next().is_some() {
            return;
        }
        let file = Self::host_state_file();
        let Ok(state) = fs::read_to_string(&file) else {
            return;
        };
        let Ok(state) = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&state) else {
            return;
        };
        for s in KUBELET_SYSCTLS {
            if let Some(v) = state.get(s).and_then(|v| v.as_str()) {
                let _ = fs::write(format!("/proc/sys/{s}"), v);
            }
        }
        for p in HOST_PATHS {
            if state.get(p).and_then(|v| v.as_bool()) == Some(false) {
                unmount_under(Path::new(p));
                let _ = fs::remove_dir_all(p);
            }
        }
        let _ = fs::remove_file(file);
    }
}

/// Real nodes of other cluster directories whose kubelet or containerd run.
fn other_real_nodes(me: &Path) -> impl Iterator<Item = PathBuf> {
    let me = me.to_path_buf();
    fs::read_dir(tools::cache_dir().join("clusters"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(move |p| p.join("node") != me)
        .filter(|p| Node::of(p).is_some_and(|n| !n.running().is_empty()))
}

/// The Debian packages the real node needs, installed when missing (as root).
pub fn ensure_packages(sh: &Shell) -> Result<()> {
    if check_packages().is_ok() {
        return Ok(());
    }
    let root = cmd!(sh, "id -u").quiet().read().map(|u| u.trim() == "0").unwrap_or(false);
    if !root {
        bail!(
            "the real node needs Debian's {} (run as root: apt-get install -y {})",
            DEBIAN_PACKAGES.join(", "),
            DEBIAN_PACKAGES.join(" ")
        );
    }
    eprintln!("xtask: installing Debian packages for the real node: {}", DEBIAN_PACKAGES.join(" "));
    cmd!(sh, "apt-get update -qq").run()?;
    let pkgs = DEBIAN_PACKAGES;
    cmd!(sh, "apt-get install -y -qq --no-install-recommends {pkgs...}")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .run()?;
    check_packages()
}

/// containerd + runc + CNI plugins, iptables for kube-proxy and
/// kube-router, ipset for kube-router, conntrack, util-linux's nsenter,
/// iproute2, gcc for the pause binary.
const DEBIAN_PACKAGES: [&str; 10] = [
    "containerd",
    "runc",
    "containernetworking-plugins",
    "iptables",
    "ipset",
    "conntrack",
    "iproute2",
    "util-linux",
    "gcc",
    "libc6-dev",
];

fn check_packages() -> Result<()> {
    // Commands found in the usual directories (runc is /usr/sbin/runc on
    // bookworm, /usr/bin/runc elsewhere), and the CNI plugins containerd runs.
    let commands = [
        "containerd",
        "containerd-shim-runc-v2",
        "ctr",
        "runc",
        "iptables",
        "ipset",
        "conntrack",
        "nsenter",
        "gcc",
        "ip",
    ];
    let on_path =
        |name: &str| ["/usr/bin", "/usr/sbin", "/bin", "/sbin"].iter().any(|d| Path::new(d).join(name).exists());
    let mut missing: Vec<String> = commands.iter().filter(|c| !on_path(c)).map(|c| c.to_string()).collect();
    for plugin in ["bridge", "host-local", "loopback"] {
        let p = Path::new("/usr/lib/cni").join(plugin);
        if !p.exists() {
            missing.push(p.display().to_string());
        }
    }
    if !missing.is_empty() {
        bail!("missing for the real node: {missing:?}");
    }
    Ok(())
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

fn run(a: &[String]) -> Result<()> {
    let out = Command::new(&a[0]).args(&a[1..]).output().with_context(|| format!("running {}", a[0]))?;
    if !out.status.success() {
        bail!("`{}` failed: {}", a.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

fn kill_matching(pred: impl Fn(&str) -> bool) {
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline"))
            && pred(&String::from_utf8_lossy(&cmdline).replace('\0', " "))
        {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
    }
}

/// Unmounts every mount point under `dir` (deepest first).
pub fn unmount_under(dir: &Path) {
    let prefix = dir.display().to_string();
    for _ in 0..5 {
        let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut points: Vec<String> = info
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .map(|p| p.replace("\\040", " "))
            .filter(|p| p == &prefix || p.starts_with(&format!("{prefix}/")))
            .collect();
        if points.is_empty() {
            return;
        }
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            let _ = Command::new("umount").arg(&p).output();
            let _ = Command::new("umount").arg("-l").arg(&p).output();
        }
    }
}

fn find_files(root: &Path, name: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for d in find_dirs(root) {
        let f = d.join(name);
        if f.exists() {
            out.push(f);
        }
    }
    out
}

fn find_dirs(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        if !d.is_dir() {
            continue;
        }
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(e.path());
            }
        }
        out.push(d);
    }
    out
}

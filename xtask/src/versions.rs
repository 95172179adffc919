//! Pinned versions of every component the local control plane is built from.
//! Change them here and nowhere else.

/// k8s.io/kubernetes release (kube-apiserver, kube-controller-manager,
/// kube-scheduler, kubectl, and the real node's kubelet and kube-proxy).
pub const KUBERNETES: &str = "v1.36.3";
/// The matching k8s.io staging modules (v0.x of the same minor/patch).
pub const KUBERNETES_STAGING: &str = "v0.36.3";
/// go.etcd.io/etcd/server/v3.
pub const ETCD: &str = "v3.6.16";
/// github.com/coredns/coredns: cluster DNS for the real node's pods.
pub const COREDNS: &str = "v1.15.0";
/// github.com/cloudnativelabs/kube-router/v2: the real node's NetworkPolicy
/// engine (its policy controller only; iptables + ipset). The newest the Go
/// module proxy here serves (v2.5.0 and v2.6.1 answer 403).
pub const KUBE_ROUTER: &str = "v2.1.0";
/// sigs.k8s.io/kwok.
pub const KWOK: &str = "v0.8.0";
/// helm.sh/helm/v3 (chart lint/template in tests and e2e).
pub const HELM: &str = "v3.22.0";
/// Oldest Go that builds all of the above.
pub const GO_MIN: (u32, u32) = (1, 26);
/// npm minecraft-protocol: the independent Server List Ping peer in tests.
pub const NPM_MINECRAFT_PROTOCOL: &str = "1.54.0";
/// npm rcon-server: the independent RCON peer in backup tests.
pub const NPM_RCON_SERVER: &str = "0.1.1";
/// crates.io s3s-fs: the S3-compatible server backup tests write to
/// (0.14.x is the newest that builds with Rust 1.95).
pub const S3S_FS: &str = "0.14.1";

// sigs.k8s.io/cli-utils (kstatus) for tests/tools/kstatus-check is pinned by
// that module's go.mod/go.sum (v0.37.2), not here: `go build` reads them.

/// The Go toolchain tests/tools/argocd-health is built with (Argo CD
/// v3.6.1, pinned by that module's go.mod/go.sum, needs Go 1.27; the go
/// command takes it from the module proxy). Nothing else needs it.
pub const ARGOCD_GO_TOOLCHAIN: &str = "go1.27.3";
// github.com/prometheus/prometheus (promtool) for tests/tools/promtool is
// pinned by that module's go.mod/go.sum (v0.316.0).

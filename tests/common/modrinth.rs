//! A stand-in for api.modrinth.com serving recorded responses
//! (tests/data/modrinth, sources in its SOURCES.md).

use super::files::{FileServer, Reply};

pub fn data(file: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/modrinth").join(file);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

pub fn json(file: &str) -> serde_json::Value {
    serde_json::from_slice(&data(file)).unwrap()
}

/// Starts the server; the API base URL is `<base>/v2`.
pub async fn start() -> FileServer {
    let s = FileServer::start().await;
    for (names, file) in [
        (&["luckperms", "Vebnzrzj"][..], "versions-luckperms.json"),
        (&["essentialsx", "hXiIvTyT"][..], "versions-essentialsx.json"),
        (&["chunky", "fALzjamp"][..], "versions-chunky.json"),
        (&["better-boat-movement", "wTfH1dkt"][..], "versions-better-boat-movement.json"),
        (&["P7dR8mSH"][..], "synthetic/versions-fabric-api.json"),
    ] {
        for n in names {
            s.set(&format!("/v2/project/{n}/version"), Reply::Body(data(file)));
        }
    }
    let boo = json("version-biomesoplenty-qAKuAKD7.json");
    s.set("/v2/project/biomesoplenty/version", Reply::Body(serde_json::to_vec(&vec![boo.clone()]).unwrap()));
    s.set("/v2/version/qAKuAKD7", Reply::Body(serde_json::to_vec(&boo).unwrap()));
    s
}

//! Our Server List Ping client against an independent implementation: the
//! npm package minecraft-protocol's server.

mod common;

use std::time::Duration;

use common::peers::SlpPeer;
use craftplane::minecraft::slp;

#[tokio::test]
async fn reads_version_and_players_from_a_real_server() {
    let peer = SlpPeer::start(3, 25, "1.20.4");
    let s = slp::ping("127.0.0.1", peer.port, Duration::from_secs(5)).await.expect("ping");
    assert_eq!(s.version, "1.20.4");
    assert_eq!(s.protocol, 765);
    assert_eq!((s.online, s.max), (3, 25));
    assert_eq!(s.motd, "craftplane test peer");
}

#[tokio::test]
async fn a_starting_server_reports_zero_max_players() {
    let peer = SlpPeer::start(0, 0, "1.20.1");
    let s = slp::ping("127.0.0.1", peer.port, Duration::from_secs(5)).await.expect("ping");
    assert_eq!(s.version, "1.20.1");
    assert_eq!(s.max, 0);
}

#[tokio::test]
async fn a_dead_server_is_an_error_within_the_timeout() {
    let port = {
        let peer = SlpPeer::start(0, 20, "1.20.4");
        peer.port
    }; // peer killed here
    let t0 = std::time::Instant::now();
    let e = slp::ping("127.0.0.1", port, Duration::from_secs(2)).await.unwrap_err();
    assert!(matches!(e, slp::PingError::Io(_) | slp::PingError::Timeout(_)), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(3));
}

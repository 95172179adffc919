//! The server image and the Java it needs.
//!
//! The Java version is part of the itzg/minecraft-server image tag, and a
//! Minecraft upgrade that needs a newer Java is the most common broken
//! upgrade. craftplane picks the tag from the Minecraft version here, in one
//! place; `spec.image` overrides it.

/// Image repository.
pub const IMAGE_REPOSITORY: &str = "itzg/minecraft-server";
/// Pinned image release (`<release>-<java tag>`).
pub const IMAGE_RELEASE: &str = "2025.8.0";

/// The Java tag a Minecraft version needs (per the Minecraft wiki's table,
/// as the image documentation points to).
pub fn java_tag(version: &str) -> &'static str {
    let Some((major, minor, patch)) = parse(version) else {
        // LATEST, SNAPSHOT and weekly snapshots track the newest release.
        return "java21";
    };
    match (major, minor, patch) {
        // Year-based versions (26.1 and later) need Java 25.
        (m, _, _) if m >= 26 => "java25",
        (1, m, _) if m < 17 => "java8",
        (1, 17..=19, _) => "java17",
        (1, 20, p) if p <= 4 => "java17",
        _ => "java21",
    }
}

/// The default image for a Minecraft version.
pub fn default_image(version: &str) -> String {
    format!("{IMAGE_REPOSITORY}:{IMAGE_RELEASE}-{}", java_tag(version))
}

fn parse(v: &str) -> Option<(u32, u32, u32)> {
    let core = v.split('-').next()?;
    let mut it = core.split('.');
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    let patch = it.next().map(|p| p.parse().ok()).unwrap_or(Some(0))?;
    Some((major, minor, patch))
}

/// The operator's own image (runs `craftplane fetch-plugins` in server
/// pods); the controller's `--helper-image` overrides it.
pub const OPERATOR_IMAGE: &str = concat!("localhost/craftplane:", env!("CARGO_PKG_VERSION"));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_follows_the_minecraft_version() {
        for (v, tag) in [
            ("1.8.9", "java8"),
            ("1.12.2", "java8"),
            ("1.16.5", "java8"),
            ("1.17.1", "java17"),
            ("1.18.2", "java17"),
            ("1.20.4", "java17"),
            ("1.20.5", "java21"),
            ("1.20.6", "java21"),
            ("1.21.4", "java21"),
            ("1.21", "java21"),
            ("1.21.5-rc1", "java21"),
            ("26.1", "java25"),
            ("LATEST", "java21"),
            ("SNAPSHOT", "java21"),
            ("24w14a", "java21"),
        ] {
            assert_eq!(java_tag(v), tag, "{v}");
        }
        assert_eq!(default_image("1.20.1"), "itzg/minecraft-server:2025.8.0-java17");
    }
}

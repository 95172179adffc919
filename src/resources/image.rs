//! The server image and the Java it needs.
//!
//! The Java version is part of the itzg/minecraft-server image tag, and a
//! Minecraft upgrade that needs a newer Java is the most common broken
//! upgrade. craftplane picks the tag from the Minecraft version here, in one
//! place; `spec.image` overrides it.
//!
//! Two tables: [`RELEASES`] records which Java tags each itzg release
//! publishes (as `<release>-<tag>`), and [`JAVA_FOR_MINECRAFT`] which Java a
//! Minecraft version needs. [`IMAGE_RELEASE`] must ship every tag the second
//! table names; a unit test checks it.

/// Image repository.
pub const IMAGE_REPOSITORY: &str = "itzg/minecraft-server";

/// Pinned image release (`<release>-<java tag>`). Must be one of
/// [`RELEASES`] and ship every tag of [`JAVA_FOR_MINECRAFT`].
pub const IMAGE_RELEASE: &str = "2026.8.1";

/// An itzg/minecraft-server release and the Java tags (image variants) it
/// publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Release {
    /// Release name, e.g. `2026.8.1`.
    pub name: &'static str,
    /// Variants built for it: `<name>-<tag>` exists for each.
    pub java_tags: &'static [&'static str],
}

/// itzg releases and the variants each one builds, copied from the variant
/// matrix of the release's `.github/workflows/build*.yml`. The `java25`
/// variants appeared in 2025.10.0 (added 2025-09-27); before that the newest
/// was `java24`.
pub const RELEASES: &[Release] = &[
    Release {
        name: "2025.8.0",
        java_tags: &[
            "java24",
            "java24-graalvm",
            "java21",
            "java21-jdk",
            "java21-alpine",
            "java21-graalvm",
            "java17",
            "java17-alpine",
            "java17-graalvm",
            "java16",
            "java11",
            "java8",
            "java8-jdk",
            "java8-graalvm-ce",
            "java8-openj9",
        ],
    },
    Release {
        name: "2026.8.1",
        java_tags: &[
            "java25",
            "java25-alpine",
            "java25-jdk",
            "java25-graalvm",
            "java21",
            "java21-jdk",
            "java21-alpine",
            "java21-graalvm",
            "java17",
            "java17-graalvm",
            "java16",
            "java11",
            "java8",
            "java8-jdk",
        ],
    },
];

/// One row of the Minecraft → Java table: versions from `since` (a release,
/// `major.minor.patch`) and weekly snapshots from `weekly_since` (`(year,
/// week)` of a `YYwWWx` name) need `tag`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JavaRow {
    pub since: (u32, u32, u32),
    pub weekly_since: Option<(u32, u32)>,
    pub tag: &'static str,
}

/// Minecraft version → Java tag, newest first (the Minecraft wiki's Java
/// requirements, which the image documentation points to). The first row a
/// version reaches applies; the last row catches everything older.
pub const JAVA_FOR_MINECRAFT: &[JavaRow] = &[
    // Year-based versions (26.1, its snapshots `26.1-snapshot-N`) need Java 25;
    // there are no weekly `YYwWWx` snapshots of them.
    JavaRow { since: (26, 1, 0), weekly_since: None, tag: "java25" },
    // 1.20.5 and its snapshots from 24w14a need Java 21.
    JavaRow { since: (1, 20, 5), weekly_since: Some((24, 14)), tag: "java21" },
    // 1.17 (Java 16) and later run on 17; snapshots from 21w19a.
    JavaRow { since: (1, 17, 0), weekly_since: Some((21, 19)), tag: "java17" },
    JavaRow { since: (0, 0, 0), weekly_since: Some((0, 0)), tag: "java8" },
];

/// The Java tag a Minecraft version needs. `LATEST` and `SNAPSHOT` (and
/// anything not recognised) mean the newest Minecraft, so the newest Java of
/// the table.
pub fn java_tag(version: &str) -> &'static str {
    let newest = JAVA_FOR_MINECRAFT[0].tag;
    if let Some(v) = parse(version) {
        JAVA_FOR_MINECRAFT.iter().find(|r| v >= r.since).map_or(newest, |r| r.tag)
    } else if let Some(w) = parse_weekly(version) {
        JAVA_FOR_MINECRAFT.iter().find(|r| r.weekly_since.is_some_and(|s| w >= s)).map_or(newest, |r| r.tag)
    } else {
        newest
    }
}

/// The release named `name` in [`RELEASES`].
pub fn release(name: &str) -> Option<&'static Release> {
    RELEASES.iter().find(|r| r.name == name)
}

/// Tags of [`JAVA_FOR_MINECRAFT`] that `release` does not publish (all of
/// them if the release is unknown).
pub fn missing_tags(release_name: &str) -> Vec<&'static str> {
    let shipped = release(release_name).map(|r| r.java_tags).unwrap_or(&[]);
    JAVA_FOR_MINECRAFT.iter().map(|r| r.tag).filter(|t| !shipped.contains(t)).collect()
}

/// The default image for a Minecraft version.
pub fn default_image(version: &str) -> String {
    format!("{IMAGE_REPOSITORY}:{IMAGE_RELEASE}-{}", java_tag(version))
}

/// Whether `image` (a reference as written in `spec.image`) is one of the
/// allowed repository prefixes: equal to one, or below it — after a `/`
/// (a registry or namespace prefix), or its tag (`:`) or digest (`@`).
/// `ghcr.io/acme/paper` allows `ghcr.io/acme/paper:1.21` but not
/// `ghcr.io/acme/paper-evil`. The admission policy
/// (charts/craftplane/files/allowed-skus-policy.yaml) has the same rule.
pub fn allowed(image: &str, prefixes: &[String]) -> bool {
    prefixes.iter().filter(|p| !p.is_empty()).any(|p| {
        image == p
            || (p.ends_with('/') && image.starts_with(p.as_str()))
            || image
                .strip_prefix(p.as_str())
                .is_some_and(|rest| rest.starts_with('/') || rest.starts_with(':') || rest.starts_with('@'))
    })
}

/// `1.21.4`, `1.21`, `1.21.5-rc1`, `26.1-snapshot-2` → (major, minor, patch).
fn parse(v: &str) -> Option<(u32, u32, u32)> {
    let core = v.split('-').next()?;
    let mut it = core.split('.');
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    let patch = it.next().map(|p| p.parse().ok()).unwrap_or(Some(0))?;
    if it.next().is_some() {
        return None;
    }
    Some((major, minor, patch))
}

/// A weekly snapshot name `24w14a` → (24, 14).
fn parse_weekly(v: &str) -> Option<(u32, u32)> {
    let (year, rest) = v.split_once('w')?;
    let week = rest.get(..2)?;
    let suffix = rest.get(2..)?;
    if year.len() != 2 || suffix.len() != 1 || !suffix.chars().all(|c| c.is_ascii_lowercase()) {
        return None;
    }
    Some((year.parse().ok()?, week.parse().ok()?))
}

/// The operator's own image (runs `craftplane fetch-plugins` in server
/// pods); the controller's `--helper-image` overrides it.
pub const OPERATOR_IMAGE: &str = concat!("localhost/craftplane:", env!("CARGO_PKG_VERSION"));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_images_are_repository_prefixes() {
        let list = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let prefixes = list(&["registry.example.com/mc/", "ghcr.io/acme/paper"]);
        for ok in [
            "registry.example.com/mc/paper:1.21",
            "registry.example.com/mc/team/fabric@sha256:abc",
            "ghcr.io/acme/paper",
            "ghcr.io/acme/paper:1.21.4",
            "ghcr.io/acme/paper@sha256:abc",
            "ghcr.io/acme/paper/sub:1",
        ] {
            assert!(allowed(ok, &prefixes), "{ok}");
        }
        for bad in [
            "xmrig/xmrig:latest",
            "ghcr.io/acme/paper-evil:1",
            "ghcr.io/acme/paperx",
            "registry.example.com/mcx/paper",
            "registry.example.com/mc",
            "evil.com/ghcr.io/acme/paper",
        ] {
            assert!(!allowed(bad, &prefixes), "{bad}");
        }
        assert!(!allowed("anything", &[]), "an empty list allows nothing");
        assert!(!allowed("anything", &list(&[""])), "an empty prefix allows nothing");
    }

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
            ("1.20.5-pre1", "java21"),
            ("1.20.6", "java21"),
            ("1.21.4", "java21"),
            ("1.21", "java21"),
            ("1.21.5-rc1", "java21"),
            ("1.21.11", "java21"),
            ("26.1", "java25"),
            ("26.1-snapshot-1", "java25"),
            ("26.1-pre-2", "java25"),
            ("26.1-rc-1", "java25"),
            ("26.2", "java25"),
            // LATEST and SNAPSHOT are the newest Minecraft: 26.x today.
            ("LATEST", "java25"),
            ("SNAPSHOT", "java25"),
            ("20w45a", "java8"),
            ("21w19a", "java17"),
            ("24w13a", "java17"),
            ("24w14a", "java21"),
            ("25w45a", "java21"),
        ] {
            assert_eq!(java_tag(v), tag, "{v}");
        }
        assert_eq!(default_image("1.20.1"), format!("itzg/minecraft-server:{IMAGE_RELEASE}-java17"));
    }

    /// The pinned release must publish every tag the Java table names, or a
    /// server gets an image that does not exist.
    #[test]
    fn pinned_release_ships_every_java_tag_of_the_table() {
        assert!(release(IMAGE_RELEASE).is_some(), "IMAGE_RELEASE {IMAGE_RELEASE} is not in RELEASES");
        assert_eq!(missing_tags(IMAGE_RELEASE), Vec::<&str>::new(), "{IMAGE_RELEASE} lacks tags of JAVA_FOR_MINECRAFT");
        // The check is not vacuous: the previous pin lacked java25.
        assert_eq!(missing_tags("2025.8.0"), vec!["java25"]);
        assert_eq!(missing_tags("1999.1.0").len(), JAVA_FOR_MINECRAFT.len());
    }

    #[test]
    fn java_table_is_newest_first_and_ends_with_a_catch_all() {
        assert!(JAVA_FOR_MINECRAFT.windows(2).all(|w| w[0].since > w[1].since));
        assert_eq!(JAVA_FOR_MINECRAFT.last().map(|r| r.since), Some((0, 0, 0)));
    }
}

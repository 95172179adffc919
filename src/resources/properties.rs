//! server.properties rendering: deterministic `name=value` lines.

use std::collections::BTreeMap;

/// Renders properties as sorted `name=value` lines (the format of both
/// server.properties and the image's `CUSTOM_SERVER_PROPERTIES`).
pub fn render(props: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    for (k, v) in props {
        out.push_str(k);
        out.push('=');
        out.push_str(v);
        out.push('\n');
    }
    out
}

/// A property value that would break the line format.
pub fn check_values(props: &BTreeMap<String, String>) -> Result<(), String> {
    for (k, v) in props {
        if v.contains(['\n', '\r']) {
            return Err(format!("property {k:?} contains a line break"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_sorted_lines() {
        let p = BTreeMap::from([("pvp".to_string(), "false".to_string()), ("difficulty".into(), "hard".into())]);
        assert_eq!(render(&p), "difficulty=hard\npvp=false\n");
        assert_eq!(render(&BTreeMap::new()), "");
    }

    #[test]
    fn rejects_line_breaks() {
        let p = BTreeMap::from([("motd-x".to_string(), "a\nb".to_string())]);
        assert!(check_values(&p).unwrap_err().contains("motd-x"));
    }
}

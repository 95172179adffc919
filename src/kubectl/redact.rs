//! Redaction of what `kubectl craftplane report` prints (a report is shared
//! with support), by structure rather than by pattern on text lines: the
//! objects are walked as values, and the values of secret-looking keys,
//! env entries with a secret-looking name and URL credentials are blanked
//! wherever they are, including inside strings that hold whole files (a
//! ConfigMap's `server.properties`, a plugin's YAML, embedded JSON).

use serde_json::Value;

/// What a redacted value becomes.
pub const REDACTED: &str = "<redacted>";

/// Words that make a key secret (a key is split into words at `-`, `_`,
/// `.`, other punctuation and camelCase boundaries, so `passive-mode` or
/// `bypass` are not secret, `rcon.password` and `apiKey` are).
const SECRET_WORDS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "pass",
    "pwd",
    "secret",
    "secrets",
    "token",
    "tokens",
    "credential",
    "credentials",
    "apikey",
    "privatekey",
    "auth",
    "authorization",
];

/// Two words that make a key secret together.
const SECRET_PAIRS: &[(&str, &str)] = &[("api", "key"), ("private", "key"), ("access", "key")];

/// Last words of a key that names where a secret is rather than holding it
/// (`secretName`, `secretKeyRef`, `passwordFile`): kept, they help support.
const REFERENCE_WORDS: &[&str] = &["ref", "refs", "name", "names", "file", "files", "path", "dir", "type", "mode"];

/// A key split into lower-case words.
fn words(key: &str) -> Vec<String> {
    let chars: Vec<char> = key.chars().collect();
    let mut out: Vec<String> = Vec::new();
    let mut cur = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if !c.is_alphanumeric() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            continue;
        }
        let prev = i.checked_sub(1).map(|j| chars[j]);
        let next = chars.get(i + 1);
        let boundary = c.is_uppercase()
            && prev.is_some_and(|p| {
                p.is_lowercase() || p.is_ascii_digit() || (p.is_uppercase() && next.is_some_and(|n| n.is_lowercase()))
            });
        if boundary && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        cur.extend(c.to_lowercase());
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Whether `key` names where something is (`secretName`, `tokenPath`).
fn reference_key(key: &str) -> bool {
    words(key).last().is_some_and(|last| REFERENCE_WORDS.contains(&last.as_str()))
}

/// Whether the value of `key` is a credential.
pub fn secret_key(key: &str) -> bool {
    let w = words(key);
    if w.is_empty() || reference_key(key) {
        return false;
    }
    w.iter().any(|x| SECRET_WORDS.contains(&x.as_str()))
        || w.windows(2).any(|p| SECRET_PAIRS.iter().any(|(a, b)| p[0] == *a && p[1] == *b))
}

/// Blanks the value of a secret key: strings and numbers (booleans and
/// nulls say nothing), in lists and maps too, except where a map names
/// where the secret is (`secret: {secretName: …}`).
fn blank(v: &mut Value) {
    match v {
        Value::String(s) if s.is_empty() => {}
        Value::String(_) | Value::Number(_) => *v = Value::String(REDACTED.into()),
        Value::Array(items) => items.iter_mut().for_each(blank),
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                if reference_key(k) { redact_value(child) } else { blank(child) }
            }
        }
        Value::Bool(_) | Value::Null => {}
    }
}

/// Redacts a value in place: values of secret-looking keys at any depth,
/// `value` of `{name, value}` entries (env) with a secret-looking name,
/// and inside every string, URL credentials and secret-looking
/// `key=value` / `key: value` lines.
pub fn redact_value(v: &mut Value) {
    match v {
        Value::Object(map) => {
            let named_secret =
                ["name", "key"].iter().any(|n| map.get(*n).and_then(Value::as_str).is_some_and(secret_key));
            for (k, child) in map.iter_mut() {
                if secret_key(k) || (named_secret && k == "value") {
                    blank(child);
                } else {
                    redact_value(child);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_value),
        Value::String(s) => *s = redact_text(s),
        _ => {}
    }
}

/// Redacts free text: embedded JSON by structure, otherwise line by line.
pub fn redact_text(text: &str) -> String {
    let trimmed = text.trim();
    if trimmed.starts_with(['{', '['])
        && let Ok(mut v) = serde_json::from_str::<Value>(trimmed)
        && (v.is_object() || v.is_array())
    {
        redact_value(&mut v);
        let body = if text.contains('\n') { serde_json::to_string_pretty(&v) } else { serde_json::to_string(&v) };
        if let Ok(body) = body {
            return body;
        }
    }
    text.split_inclusive('\n').map(redact_line).collect()
}

/// `scheme://user:password@host` → `scheme://***@host`, everywhere in `line`.
fn redact_userinfo(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(i) = rest.find("://") {
        let scheme_ok =
            rest[..i].chars().next_back().is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        let after = &rest[i + 3..];
        let end =
            after.find(|c: char| c.is_whitespace() || matches!(c, '/' | '?' | '#' | '"' | '\'')).unwrap_or(after.len());
        out.push_str(&rest[..i + 3]);
        match after[..end].rfind('@') {
            Some(at) if scheme_ok && at > 0 => {
                out.push_str("***");
                rest = &after[at..];
            }
            _ => rest = after,
        }
    }
    out.push_str(rest);
    out
}

/// A key as written in a config line (`  - "rcon.password"`, `--token`,
/// `export API_KEY`), if the text before a separator is one.
fn line_key(before: &str) -> Option<&str> {
    let k = before.trim().trim_start_matches("- ").trim_start_matches('-').trim();
    let k = k.strip_prefix("export ").unwrap_or(k).trim().trim_matches(['"', '\'']);
    let ok = !k.is_empty() && k.chars().all(|c| c.is_alphanumeric() || matches!(c, '_' | '.' | '-' | '/'));
    ok.then_some(k)
}

/// Redacts one line of text (its line ending kept).
fn redact_line(line: &str) -> String {
    let (body, end) = match line.strip_suffix('\n') {
        Some(b) => (b, "\n"),
        None => (line, ""),
    };
    let body = redact_userinfo(body);
    // `key: value` or `key=value` as the whole line (properties, YAML, env files).
    if let Some(i) = body.find([':', '=']) {
        let value = body[i + 1..].trim();
        let block = matches!(value, "|" | "|-" | "|+" | ">" | ">-" | ">+");
        if line_key(&body[..i]).is_some_and(secret_key) && !value.is_empty() && !block && value != REDACTED {
            let ws = body[i + 1..].len() - body[i + 1..].trim_start().len();
            return format!("{}{REDACTED}{end}", &body[..i + 1 + ws]);
        }
    }
    // `key=value` anywhere (command-line flags, log fields).
    let mut out = String::with_capacity(body.len());
    let mut rest = body.as_str();
    while let Some(i) = rest.find('=') {
        let start = rest[..i]
            .char_indices()
            .rev()
            .find(|(_, c)| !(c.is_alphanumeric() || matches!(c, '_' | '.' | '-')))
            .map_or(0, |(j, c)| j + c.len_utf8());
        out.push_str(&rest[..i + 1]);
        let after = &rest[i + 1..];
        if secret_key(&rest[start..i]) {
            let end = match after.chars().next() {
                Some(q @ ('"' | '\'')) => after[1..].find(q).map_or(after.len(), |j| j + 2),
                _ => after.find(char::is_whitespace).unwrap_or(after.len()),
            };
            if end > 0 && &after[..end] != REDACTED {
                out.push_str(REDACTED);
            } else {
                out.push_str(&after[..end]);
            }
            rest = &after[end..];
        } else {
            rest = after;
        }
    }
    out.push_str(rest);
    out.push_str(end);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secret_keys_are_told_by_their_words() {
        for k in [
            "password",
            "RCON_PASSWORD",
            "rcon.password",
            "pass",
            "db-pass",
            "secret",
            "clientSecret",
            "AWS_SECRET_ACCESS_KEY",
            "api-key",
            "apiKey",
            "APIKey",
            "api_key",
            "apikey",
            "token",
            "discord.bot-token",
            "GITHUB_TOKEN",
            "credentials",
            "private-key",
            "auth",
            "Authorization",
        ] {
            assert!(secret_key(k), "{k} is secret");
        }
        for k in [
            "passive-mode",
            "bypass",
            "compass",
            "motd",
            "name",
            "key",
            "secretName",
            "secretKeyRef",
            "passwordFile",
            "token-file",
            "tokenize",
            "author",
            "monkey",
            "keyAlias",
            "",
        ] {
            assert!(!secret_key(k), "{k} is not secret");
        }
    }

    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(
            redact_text("see s3://AKIA:wJalr%2Fx@minio.local:9000/bucket and https://ok.example/a@b"),
            "see s3://***@minio.local:9000/bucket and https://ok.example/a@b"
        );
        assert_eq!(redact_text("jdbc:mysql://root:hunter2@db:3306/mc"), "jdbc:mysql://***@db:3306/mc");
        assert_eq!(redact_text("no url: a@b"), "no url: a@b");
    }

    #[test]
    fn lines_of_embedded_files_are_redacted() {
        let props = "motd=A \\u00a7aserver\nrcon.password=hunter2\nenable-rcon=true\nserver-port=25565\n";
        assert_eq!(
            redact_text(props),
            "motd=A \\u00a7aserver\nrcon.password=<redacted>\nenable-rcon=true\nserver-port=25565\n"
        );
        let yaml = "bot:\n  token: abc.def\n  api-key: \"k-123\"\n  passive-mode: true\n  password: |\n";
        assert_eq!(
            redact_text(yaml),
            "bot:\n  token: <redacted>\n  api-key: <redacted>\n  passive-mode: true\n  password: |\n"
        );
        assert_eq!(
            redact_text("java -jar x.jar --rcon.password=hunter2 --motd=hi token=\"a b\" x"),
            "java -jar x.jar --rcon.password=<redacted> --motd=hi token=<redacted> x"
        );
        assert_eq!(redact_text("token expired: retrying"), "token expired: retrying");
        let json = r#"{"spec":{"containers":[{"env":[{"name":"RCON_PASSWORD","value":"hunter2"}]}]}}"#;
        assert_eq!(
            redact_text(json),
            r#"{"spec":{"containers":[{"env":[{"name":"RCON_PASSWORD","value":"<redacted>"}]}]}}"#
        );
    }

    #[test]
    fn objects_are_redacted_by_structure() {
        let mut v = json!({
            "env": [
                {"name": "RCON_PASSWORD", "value": "hunter2"},
                {"name": "EULA", "value": "TRUE"},
                {"name": "RCON_PASSWORD_FILE", "value": "/etc/rcon/password"},
                {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {"name": "store", "key": "secret"}}},
            ],
            "config": {"Secret": 1234, "pin": {"pass": "p4ss"}, "tokens": ["t1", {"id": "x"}], "auth": true},
            "volumes": [{"secret": {"secretName": "mc-rcon"}}],
        });
        redact_value(&mut v);
        let text = v.to_string();
        for leak in ["hunter2", "1234", "p4ss", "t1"] {
            assert!(!text.contains(leak), "{leak} in {text}");
        }
        assert_eq!(v["env"][1]["value"], "TRUE");
        assert_eq!(v["env"][2]["value"], "/etc/rcon/password");
        assert_eq!(v["env"][3]["valueFrom"]["secretKeyRef"]["name"], "store");
        assert_eq!(v["config"]["tokens"][1]["id"], REDACTED, "a secret's whole value is blanked");
        assert_eq!(v["config"]["auth"], true);
        assert_eq!(v["volumes"][0]["secret"]["secretName"], "mc-rcon");
    }
}

//! One line of QMP shell input: a JSON request, or `name key=value ...` like QEMU's
//! `qmp-shell`.
//!
//! In the short form, a value is read as JSON when it is a number, `true`, `false`, `null`, a
//! list `[...]`, an object `{...}` or a double-quoted string; a single-quoted value is taken
//! literally; anything else is a string. A dotted key builds nested objects:
//! `blockdev-add driver=file node-name=f0 filename=/tmp/a.img` or
//! `device_add driver=virtio-net-pci id=n1 netdev=u1`, and
//! `object-add qom-type=secret id=s0 data='a b'`; `a.b=1 a.c=2` gives `{"a": {"b": 1, "c": 2}}`.

use serde_json::{Map, Value};

/// What a line asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// Nothing: a blank line or a `#` comment.
    Empty,
    /// A QMP command.
    Command {
        /// The command name.
        name: String,
        /// Its arguments, if any.
        arguments: Option<Value>,
    },
}

/// Parses one line of input.
pub fn parse(line: &str) -> Result<Line, String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(Line::Empty);
    }
    if line.starts_with('{') {
        return parse_json_request(line);
    }
    let tokens = tokenize(line)?;
    let (name, args) = tokens.split_first().expect("a non-empty line has a token");
    if name.contains('=') || !is_command_name(name) {
        return Err(format!(
            "{name:?} is not a command name (write NAME key=value ..., or a JSON request)"
        ));
    }
    if args.is_empty() {
        return Ok(Line::Command {
            name: name.clone(),
            arguments: None,
        });
    }
    let mut map = Map::new();
    for arg in args {
        let Some((key, raw)) = arg.split_once('=') else {
            return Err(format!("{arg:?} is not key=value"));
        };
        if key.is_empty() {
            return Err(format!("{arg:?} has an empty key"));
        }
        let value = parse_value(raw).map_err(|e| format!("value of {key}: {e}"))?;
        insert_dotted(&mut map, key, value)?;
    }
    Ok(Line::Command {
        name: name.clone(),
        arguments: Some(Value::Object(map)),
    })
}

fn is_command_name(name: &str) -> bool {
    name.chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
}

fn parse_json_request(line: &str) -> Result<Line, String> {
    let value: Value =
        serde_json::from_str(line).map_err(|e| format!("not a valid JSON request: {e}"))?;
    let Value::Object(mut map) = value else {
        unreachable!("starts with a brace");
    };
    let name = match map.remove("execute") {
        Some(Value::String(s)) => s,
        Some(other) => return Err(format!("\"execute\" must be a string, not {other}")),
        None => return Err("a JSON request needs \"execute\": \"COMMAND\"".into()),
    };
    let arguments = match map.remove("arguments") {
        None => None,
        Some(v @ Value::Object(_)) => Some(v),
        Some(other) => return Err(format!("\"arguments\" must be an object, not {other}")),
    };
    // The shell numbers requests itself; a given id is accepted and not used.
    map.remove("id");
    if let Some(key) = map.keys().next() {
        return Err(format!(
            "unknown member {key:?} in the request (expected execute, arguments, id)"
        ));
    }
    Ok(Line::Command { name, arguments })
}

/// Splits on whitespace outside quotes and outside `[...]`/`{...}`.
fn tokenize(line: &str) -> Result<Vec<String>, String> {
    let mut tokens = Vec::new();
    let mut current = String::new();
    let mut in_token = false;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let mut depth = 0usize;
    for c in line.chars() {
        if let Some(q) = quote {
            current.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' && q == '"' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' => {
                quote = Some(c);
                current.push(c);
                in_token = true;
            }
            '[' | '{' => {
                depth += 1;
                current.push(c);
                in_token = true;
            }
            ']' | '}' => {
                depth = depth.saturating_sub(1);
                current.push(c);
                in_token = true;
            }
            c if c.is_whitespace() && depth == 0 => {
                if in_token {
                    tokens.push(std::mem::take(&mut current));
                    in_token = false;
                }
            }
            c => {
                current.push(c);
                in_token = true;
            }
        }
    }
    if let Some(q) = quote {
        return Err(format!("unterminated {q} quote"));
    }
    if depth > 0 {
        return Err("unbalanced [ or { in the line".into());
    }
    if in_token {
        tokens.push(current);
    }
    Ok(tokens)
}

/// A value of the short form (see the module docs).
fn parse_value(raw: &str) -> Result<Value, String> {
    if let Some(inner) = raw.strip_prefix('\'') {
        return inner
            .strip_suffix('\'')
            .map(|s| Value::String(s.to_owned()))
            .ok_or_else(|| format!("{raw:?}: text after the closing quote"));
    }
    let first = raw.chars().next();
    if matches!(first, Some('"' | '[' | '{')) {
        return serde_json::from_str(raw).map_err(|e| format!("{raw:?} is not valid JSON: {e}"));
    }
    match raw {
        "true" => return Ok(Value::Bool(true)),
        "false" => return Ok(Value::Bool(false)),
        "null" => return Ok(Value::Null),
        _ => {}
    }
    if first.is_some_and(|c| c.is_ascii_digit() || c == '-') {
        if let Ok(n @ Value::Number(_)) = serde_json::from_str::<Value>(raw) {
            return Ok(n);
        }
    }
    Ok(Value::String(raw.to_owned()))
}

fn insert_dotted(map: &mut Map<String, Value>, key: &str, value: Value) -> Result<(), String> {
    let mut parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(format!("{key:?}: empty part in a dotted key"));
    }
    let last = parts.pop().expect("split yields one part at least");
    let mut node = map;
    for (i, part) in parts.iter().enumerate() {
        let entry = node
            .entry(part.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        node = match entry {
            Value::Object(m) => m,
            _ => {
                return Err(format!(
                    "{key:?}: {} is already a value, not an object",
                    parts[..=i].join(".")
                ))
            }
        };
    }
    if node.contains_key(last) {
        return Err(format!("{key:?} is given twice"));
    }
    node.insert(last.to_owned(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cmd(line: &str) -> (String, Option<Value>) {
        match parse(line).unwrap() {
            Line::Command { name, arguments } => (name, arguments),
            Line::Empty => panic!("{line:?} parsed as empty"),
        }
    }

    #[test]
    fn bare_command_and_blank_lines() {
        assert_eq!(cmd("query-status"), ("query-status".into(), None));
        assert_eq!(cmd("  stop  "), ("stop".into(), None));
        assert_eq!(parse("").unwrap(), Line::Empty);
        assert_eq!(parse("   # a comment").unwrap(), Line::Empty);
    }

    #[test]
    fn key_values_with_types() {
        let (name, args) = cmd(
            "device_add driver=virtio-net-pci id=n1 bus=pcie.0 addr=0x5 \
             mq=true vectors=4 ratio=-1.5 x=null",
        );
        assert_eq!(name, "device_add");
        assert_eq!(
            args.unwrap(),
            json!({"driver": "virtio-net-pci", "id": "n1", "bus": "pcie.0", "addr": "0x5",
                   "mq": true, "vectors": 4, "ratio": -1.5, "x": null})
        );
    }

    #[test]
    fn quoting_json_values_and_dotted_keys() {
        let (_, args) = cmd(
            r#"object-add qom-type=secret id='007' data='a b=c' label="x \"y\"" list=[1, 2] obj={"k": "v w"} a.b=1 a.c.d=true"#,
        );
        assert_eq!(
            args.unwrap(),
            json!({"qom-type": "secret", "id": "007", "data": "a b=c", "label": "x \"y\"",
                   "list": [1, 2], "obj": {"k": "v w"}, "a": {"b": 1, "c": {"d": true}}})
        );
    }

    #[test]
    fn json_requests() {
        assert_eq!(
            cmd(r#"{"execute": "query-block"}"#),
            ("query-block".into(), None)
        );
        assert_eq!(
            cmd(
                r#"{"execute": "human-monitor-command", "arguments": {"command-line": "info"}, "id": 7}"#
            ),
            (
                "human-monitor-command".into(),
                Some(json!({"command-line": "info"}))
            )
        );
    }

    #[test]
    fn errors_name_the_problem() {
        let err = |l: &str| parse(l).unwrap_err();
        assert!(err("{\"execute\": ").contains("not a valid JSON request"));
        assert!(err(r#"{"arguments": {}}"#).contains("needs \"execute\""));
        assert!(err(r#"{"execute": 5}"#).contains("must be a string"));
        assert!(err(r#"{"execute": "x", "arguments": []}"#).contains("must be an object"));
        assert!(err(r#"{"execute": "x", "argumnets": {}}"#).contains("\"argumnets\""));
        assert!(err("a=1").contains("not a command name"));
        assert!(err("query-status junk").contains("\"junk\" is not key=value"));
        assert!(err("x =1").contains("empty key"));
        assert!(err("x a='b").contains("unterminated ' quote"));
        assert!(err("x a=[1, 2").contains("unbalanced"));
        assert!(err("x a={bad}").contains("value of a"));
        assert!(err("x a=1 a=2").contains("given twice"));
        assert!(err("x a=1 a.b=2").contains("already a value"));
        assert!(err("x a..b=2").contains("empty part"));
        assert!(err("x a='b'c").contains("after the closing quote"));
    }
}

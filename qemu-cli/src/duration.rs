//! Durations on the command line: `500ms`, `5s`, `2m`, `1h`, `1m30s`, or a plain number of
//! seconds (`10`, `0.5`).

use std::time::Duration;

/// Parses a duration. Units: `ms`, `s`, `m` (minutes), `h`; parts may be combined (`1m30s`);
/// a bare number is seconds.
pub fn parse(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("an empty duration (write e.g. 5s, 500ms, 2m)".into());
    }
    if let Ok(secs) = s.parse::<f64>() {
        return from_secs(secs, text);
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(format!(
                "{text:?} is not a duration (write e.g. 5s, 500ms, 2m, 1h, 1m30s)"
            ));
        }
        let number: f64 = rest[..num_len]
            .parse()
            .map_err(|_| format!("{text:?}: {:?} is not a number", &rest[..num_len]))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale = match unit {
            "ms" => 0.001,
            "s" | "sec" | "secs" => 1.0,
            "m" | "min" | "mins" => 60.0,
            "h" => 3600.0,
            "" => {
                return Err(format!(
                    "{text:?}: a number without a unit inside a duration (write e.g. 1m30s)"
                ))
            }
            other => {
                return Err(format!(
                    "{text:?}: unknown unit {other:?} (use ms, s, m or h)"
                ))
            }
        };
        total += from_secs(number * scale, text)?;
    }
    Ok(total)
}

fn from_secs(secs: f64, text: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{text:?} is not a valid duration"))
}

/// Shows a duration the way [`parse`] reads it (`1.5s`, `250ms`, `2m`).
pub fn show(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms % 60_000 == 0 {
        format!("{}m", ms / 60_000)
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_combinations() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse(" 10 "), Ok(Duration::from_secs(10)));
        assert_eq!(parse("0.25"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert!(parse("").unwrap_err().contains("empty"));
        assert!(parse("5x").unwrap_err().contains("unknown unit \"x\""));
        assert!(parse("s").unwrap_err().contains("not a duration"));
        assert!(parse("1m30").unwrap_err().contains("without a unit"));
        assert!(parse("-5s").is_err());
        assert!(parse("1..2s").unwrap_err().contains("not a number"));
        assert!(parse("1e400").is_err());
    }

    #[test]
    fn show_round_trips() {
        for d in ["250ms", "2m", "1.5s", "90s"] {
            let parsed = parse(d).unwrap();
            assert_eq!(parse(&show(parsed)).unwrap(), parsed, "{d}");
        }
        assert_eq!(show(Duration::from_secs(120)), "2m");
        assert_eq!(show(Duration::from_millis(1500)), "1.5s");
    }
}

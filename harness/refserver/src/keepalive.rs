//! `keep_alive` values as Ollama accepts them: a JSON number of seconds (negative = forever) or a
//! Go `time.ParseDuration` string ("5m", "10s", "1h30m", "0", "-1m"). A bare "-1" is an error,
//! with Go's exact message.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    /// Never expire (negative values).
    Forever,
    /// Expire this long after the last request finished. Zero means unload now.
    For(Duration),
}

impl KeepAlive {
    pub fn is_zero(&self) -> bool {
        matches!(self, KeepAlive::For(d) if d.is_zero())
    }

    /// From a JSON request field. `null` means "not given".
    pub fn from_json(v: &serde_json::Value) -> Result<Option<KeepAlive>, String> {
        match v {
            serde_json::Value::Null => Ok(None),
            serde_json::Value::Number(n) => {
                let secs = n.as_f64().unwrap_or(0.0);
                Ok(Some(Self::from_secs_f64(secs)))
            }
            serde_json::Value::String(s) => Self::parse_str(s).map(Some),
            other => Err(format!(
                "Unsupported type: '{}'",
                match other {
                    serde_json::Value::Bool(_) => "bool",
                    serde_json::Value::Array(_) => "[]interface {}",
                    _ => "map[string]interface {}",
                }
            )),
        }
    }

    pub fn from_secs_f64(secs: f64) -> KeepAlive {
        if secs < 0.0 || !secs.is_finite() {
            KeepAlive::Forever
        } else if secs >= 9.2e9 {
            // Beyond Go's MaxInt64 nanoseconds: effectively forever.
            KeepAlive::Forever
        } else {
            KeepAlive::For(Duration::from_secs_f64(secs))
        }
    }

    /// A Go duration string; negative → forever.
    pub fn parse_str(s: &str) -> Result<KeepAlive, String> {
        let ns = parse_go_duration(s)?;
        Ok(if ns < 0 {
            KeepAlive::Forever
        } else {
            KeepAlive::For(Duration::from_nanos(ns as u64))
        })
    }
}

/// Go's `time.ParseDuration`, returning signed nanoseconds, with Go's error texts.
pub fn parse_go_duration(orig: &str) -> Result<i64, String> {
    let invalid = || format!("time: invalid duration \"{orig}\"");
    let mut s = orig;
    let mut neg = false;
    if let Some(rest) = s.strip_prefix('-') {
        neg = true;
        s = rest;
    } else if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    }
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    let mut total: f64 = 0.0;
    while !s.is_empty() {
        let b = s.as_bytes()[0];
        if !(b == b'.' || b.is_ascii_digit()) {
            return Err(invalid());
        }
        let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
        let int_part = &s[..int_len];
        s = &s[int_len..];
        let mut frac_part = "";
        if let Some(rest) = s.strip_prefix('.') {
            let frac_len = rest.bytes().take_while(u8::is_ascii_digit).count();
            frac_part = &rest[..frac_len];
            s = &rest[frac_len..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(invalid());
        }
        let unit_len = s
            .char_indices()
            .find(|(_, c)| *c == '.' || c.is_ascii_digit())
            .map(|(i, _)| i)
            .unwrap_or(s.len());
        let unit = &s[..unit_len];
        s = &s[unit_len..];
        if unit.is_empty() {
            return Err(format!("time: missing unit in duration \"{orig}\""));
        }
        let scale: f64 = match unit {
            "ns" => 1.0,
            "us" | "\u{00b5}s" | "\u{03bc}s" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => {
                return Err(format!(
                    "time: unknown unit \"{unit}\" in duration \"{orig}\""
                ));
            }
        };
        let number: f64 = format!(
            "{}.{}",
            if int_part.is_empty() { "0" } else { int_part },
            if frac_part.is_empty() { "0" } else { frac_part }
        )
        .parse()
        .map_err(|_| invalid())?;
        total += number * scale;
        if total > i64::MAX as f64 {
            return Err(invalid());
        }
    }
    let ns = total.round() as i64;
    Ok(if neg { -ns } else { ns })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ka(v: serde_json::Value) -> Result<Option<KeepAlive>, String> {
        KeepAlive::from_json(&v)
    }

    #[test]
    fn numbers_are_seconds() {
        assert_eq!(ka(json!(null)), Ok(None));
        assert_eq!(ka(json!(0)), for_ms(0));
        assert_eq!(ka(json!(30)), for_ms(30_000));
        assert_eq!(ka(json!(1.5)), for_ms(1_500));
        assert_eq!(ka(json!(-1)), Ok(Some(KeepAlive::Forever)));
        assert!(ka(json!(0)).unwrap().unwrap().is_zero());
    }

    /// `KeepAlive::For` of `ms` milliseconds.
    fn for_ms(ms: u64) -> Result<Option<KeepAlive>, String> {
        Ok(Some(KeepAlive::For(Duration::from_millis(ms))))
    }

    #[test]
    fn go_durations() {
        for (text, ms) in [
            ("5m", 300_000),
            ("10s", 10_000),
            ("1h", 3_600_000),
            ("1h30m", 5_400_000),
            ("1.5s", 1_500),
            ("250ms", 250),
            ("0", 0),
        ] {
            assert_eq!(ka(json!(text)), for_ms(ms), "{text}");
        }
        assert_eq!(ka(json!("-1m")), Ok(Some(KeepAlive::Forever)));
        assert_eq!(parse_go_duration("-1.5h"), Ok(-5_400_000_000_000));
        assert_eq!(parse_go_duration("3µs"), Ok(3000));
    }

    #[test]
    fn go_errors() {
        for (text, error) in [
            ("-1", "time: missing unit in duration \"-1\""),
            ("5", "time: missing unit in duration \"5\""),
            ("", "time: invalid duration \"\""),
            ("abc", "time: invalid duration \"abc\""),
            ("5x", "time: unknown unit \"x\" in duration \"5x\""),
        ] {
            assert_eq!(ka(json!(text)), Err(error.to_string()), "{text:?}");
        }
        assert!(ka(json!(true)).is_err());
    }
}

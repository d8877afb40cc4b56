//! Durations as people write them in the sandbox's flags and annotations: `8s`, `1m30s`,
//! `250ms`; a bare number is seconds, as in playbooks.

use std::time::Duration;

/// Parses a duration: a bare number of seconds, or what [`humantime`] reads (`ms`, `s`,
/// `m`, `h`, `d` and their long names, in any combination). The error says what is wrong.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    humantime::parse_duration(text).map_err(|error| format!("`{text}` is not a duration: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forms_of_playbooks_are_read() {
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("8s"), Ok(Duration::from_secs(8)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(2 * 86400)));
    }

    #[test]
    fn what_is_not_a_duration_is_refused() {
        for text in ["", "soon", "5 parsecs", "-1s"] {
            let error = parse_duration(text).expect_err(text);
            assert!(error.contains("is not a duration"), "{error}");
        }
    }
}

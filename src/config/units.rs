//! How sizes and durations are written in the config (`64MiB`, `1h 30m`), and a duration
//! as the whole milliseconds that clocks, stores and replies count in.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Parses `1048576`, `512KiB`, `64MiB`, `1GiB` (binary units; `B` alone is bytes).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let shift = match unit.trim() {
        "" | "B" => 0,
        "KiB" => 10,
        "MiB" => 20,
        "GiB" => 30,
        _ => {
            return Err(format!(
                "`{text}` is not a size like 1048576, 512KiB, 64MiB or 1GiB"
            ))
        }
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| format!("`{text}` is not a size like 1048576, 512KiB, 64MiB or 1GiB"))
}

/// Parses `250ms`, `2s`, `10m`, `1h 30m`, `1d`: whole numbers with the units ms, s, m, h
/// and d, several summed. A bare number is refused (seconds or milliseconds?), and so are
/// months and years (`1M` would be a month) and spelled-out units (`10 seconds`): one short
/// spelling each, the way the examples write them.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if !trimmed.is_empty() && trimmed.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "`{text}` is not a duration: give a unit, like {trimmed}s or {trimmed}ms"
        ));
    }
    let refuse =
        |why: &str| format!("`{text}` is not a duration like 250ms, 2s, 10m or 1h 30m ({why})");
    let mut total = Duration::ZERO;
    let mut rest = trimmed;
    if rest.is_empty() {
        return Err(refuse("units: ms, s, m, h, d"));
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| refuse("units: ms, s, m, h, d"))?;
        rest = rest[digits..].trim_start();
        let letters = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = match &rest[..letters] {
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            "d" => Duration::from_secs(86_400),
            "M" | "y" | "mon" | "month" | "months" | "year" | "years" | "yr" | "yrs" => {
                return Err(refuse(
                    "months and years are not accepted; write days, like 30d",
                ));
            }
            _ => return Err(refuse("units: ms, s, m, h, d")),
        };
        let part = u32::try_from(number)
            .ok()
            .and_then(|n| unit.checked_mul(n))
            .ok_or_else(|| refuse("too long"))?;
        total = total.checked_add(part).ok_or_else(|| refuse("too long"))?;
        rest = rest[letters..].trim_start();
    }
    Ok(total)
}

pub(super) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

pub(super) fn optional_duration<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

/// `d` in whole milliseconds, saturating: no configured duration comes near `u64::MAX` ms,
/// so the cut never shows, but it never wraps either.
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

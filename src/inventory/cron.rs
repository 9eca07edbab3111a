//! A 5-field cron expression (`minute hour day-of-month month day-of-week`) turned into a
//! systemd calendar event (`OnCalendar=`), in pure Rust.
//!
//! Each field becomes the set of values it matches, written back as `*`, `START/STEP` or a
//! list, so what systemd runs is exactly what cron would. What systemd cannot say is refused
//! with the reason: both day fields restricted (cron runs when either matches, systemd
//! only when both do), and cron's extensions (`L`, `W`, `#`, `?`, `@daily`).

/// One field: its name, range and, for months and weekdays, the names cron accepts.
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

impl Field {
    const fn new(name: &'static str, min: u32, max: u32, names: &'static [&'static str]) -> Field {
        Field {
            name,
            min,
            max,
            names,
        }
    }
}

const MINUTE: Field = Field::new("minute", 0, 59, &[]);
const HOUR: Field = Field::new("hour", 0, 23, &[]);
const DAY: Field = Field::new("day of month", 1, 31, &[]);
const MONTH: Field = Field::new(
    "month",
    1,
    12,
    &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
);
/// 0 and 7 are Sunday, as in cron.
const WEEKDAY: Field = Field::new(
    "day of week",
    0,
    7,
    &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
);

/// systemd's weekday names, Sunday first (cron's 0).
const SYSTEMD_WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];

/// The `OnCalendar=` value of the cron expression `expr`, or why there is none.
pub fn to_on_calendar(expr: &str) -> Result<String, String> {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    if expr.trim_start().starts_with('@') {
        return Err(format!(
            "`{expr}` is a cron nickname; write the 5 fields instead (`@daily` is `0 0 * * *`)"
        ));
    }
    if fields.len() != 5 {
        return Err(format!(
            "`{expr}` has {} field(s); a cron schedule has 5: minute hour day-of-month month day-of-week",
            fields.len()
        ));
    }
    let minutes = values(fields[0], &MINUTE)?;
    let hours = values(fields[1], &HOUR)?;
    let days = values(fields[2], &DAY)?;
    let months = values(fields[3], &MONTH)?;
    let mut weekdays: Vec<u32> = values(fields[4], &WEEKDAY)?
        .into_iter()
        .map(|d| d % 7)
        .collect();
    weekdays.sort_unstable();
    weekdays.dedup();
    let all_days = days.len() == 31;
    let all_weekdays = weekdays.len() == 7;
    if !all_days && !all_weekdays {
        return Err(format!(
            "`{expr}` restricts both the day of month and the day of week: cron runs when either \
             matches, systemd only when both do, so it cannot be said as a systemd timer"
        ));
    }
    let weekday = if all_weekdays {
        String::new()
    } else {
        let names: Vec<&str> = weekdays
            .iter()
            .map(|d| SYSTEMD_WEEKDAYS[*d as usize])
            .collect();
        format!("{} ", names.join(","))
    };
    Ok(format!(
        "{weekday}*-{}-{} {}:{}:00",
        component(&months, &MONTH),
        component(&days, &DAY),
        component(&hours, &HOUR),
        component(&minutes, &MINUTE),
    ))
}

/// The values `text` matches in `field`, sorted and without repeats.
fn values(text: &str, field: &Field) -> Result<Vec<u32>, String> {
    let bad = |why: String| format!("{} `{text}`: {why}", field.name);
    if text.is_empty() {
        return Err(bad("empty".into()));
    }
    let mut out = Vec::new();
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s
                    .parse()
                    .ok()
                    .filter(|s| *s >= 1)
                    .ok_or_else(|| bad(format!("`{s}` is not a step (a whole number >= 1)")))?;
                (r, step)
            }
            None => (part, 1),
        };
        let (start, end) = if range == "*" {
            (field.min, field.max)
        } else if let Some((a, b)) = range.split_once('-') {
            (number(a, field, &bad)?, number(b, field, &bad)?)
        } else {
            let n = number(range, field, &bad)?;
            // `5/15` is cron's `5-max/15`.
            (n, if part.contains('/') { field.max } else { n })
        };
        if start > end {
            return Err(bad(format!("the range {start}-{end} runs backwards")));
        }
        out.extend((start..=end).step_by(step as usize));
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

fn number(text: &str, field: &Field, bad: &dyn Fn(String) -> String) -> Result<u32, String> {
    let lower = text.to_ascii_lowercase();
    let named = (0u32..).zip(field.names.iter()).find(|(_, n)| **n == lower);
    let n = match named {
        Some((i, _)) => i + u32::from(field.min == 1),
        None => text.parse::<u32>().map_err(|_| {
            let names = if field.names.is_empty() {
                String::new()
            } else {
                format!(" or a name ({})", field.names.join(", "))
            };
            bad(format!(
                "`{text}` is not a number from {} to {}{names}; cron's extensions (L, W, #, ?) are not supported",
                field.min, field.max
            ))
        })?,
    };
    if n < field.min || n > field.max {
        return Err(bad(format!("{n} is outside {}-{}", field.min, field.max)));
    }
    Ok(n)
}

/// One component of a calendar event: `*`, `START/STEP` (systemd's repetition, up to the
/// field's end) or a list.
fn component(values: &[u32], field: &Field) -> String {
    if values.len() == (field.min..=field.max).count() {
        return "*".into();
    }
    if let [first, second, ..] = values {
        let step = second - first;
        let repeated: Vec<u32> = (*first..=field.max).step_by(step as usize).collect();
        if values.len() > 2 && repeated == values {
            return format!("{first:02}/{step}");
        }
    }
    values
        .iter()
        .map(|v| format!("{v:02}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_schedules() {
        for (cron, systemd) in [
            ("0 */6 * * *", "*-*-* 00/6:00:00"),
            ("* * * * *", "*-*-* *:*:00"),
            ("*/15 * * * *", "*-*-* *:00/15:00"),
            ("30 2 * * *", "*-*-* 02:30:00"),
            ("0 0 1 * *", "*-*-01 00:00:00"),
            ("0 3 * * 0", "Sun *-*-* 03:00:00"),
            ("0 3 * * 7", "Sun *-*-* 03:00:00"),
            ("0 3 * * mon-fri", "Mon,Tue,Wed,Thu,Fri *-*-* 03:00:00"),
            ("0 3 * * 1-5", "Mon,Tue,Wed,Thu,Fri *-*-* 03:00:00"),
            ("5,35 8-18/2 * * *", "*-*-* 08,10,12,14,16,18:05,35:00"),
            ("5/20 * * * *", "*-*-* *:05/20:00"),
            ("0 0 1 jan,jul *", "*-01,07-01 00:00:00"),
            ("0 12 * */3 *", "*-01/3-* 12:00:00"),
            ("0 0 */2 * *", "*-*-01/2 00:00:00"),
            ("0 1 * * 6,0", "Sun,Sat *-*-* 01:00:00"),
        ] {
            assert_eq!(to_on_calendar(cron).as_deref(), Ok(systemd), "{cron}");
        }
    }

    #[test]
    fn what_systemd_cannot_say_is_refused_with_the_reason() {
        let err = |e: &str| to_on_calendar(e).unwrap_err();
        assert!(err("0 0 1 * 1").contains("both the day of month and the day of week"));
        assert!(err("0 */6 * *").contains("has 4 field(s)"));
        assert!(err("@daily").contains("`@daily` is `0 0 * * *`"));
        assert!(err("0 0 L * *").contains("day of month `L`"));
        assert!(err("60 * * * *").contains("minute `60`: 60 is outside 0-59"));
        assert!(err("0 5-1 * * *").contains("runs backwards"));
        assert!(err("*/0 * * * *").contains("is not a step"));
        assert!(err("0 0 * foo *").contains("or a name (jan,"));
        assert!(err("0 0 ? * *").contains("extensions"));
    }
}

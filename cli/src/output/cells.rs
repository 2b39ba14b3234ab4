//! The text tables' layout and how one cell prints: offsets, dashes, rates,
//! byte rates and durations.

/// no borders and no trailing spaces.
pub fn render_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers
        .iter()
        .map(|header| header.chars().count())
        .collect();
    for row in rows {
        for (column, cell) in row.iter().enumerate() {
            if column < widths.len() {
                widths[column] = widths[column].max(cell.chars().count());
            }
        }
    }
    let mut output = String::new();
    let header_cells: Vec<String> = headers.iter().map(|header| header.to_string()).collect();
    for cells in std::iter::once(&header_cells).chain(rows) {
        let mut line = String::new();
        for (column, cell) in cells.iter().enumerate().take(widths.len()) {
            if column > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            let padding = widths[column].saturating_sub(cell.chars().count());
            line.extend(std::iter::repeat_n(' ', padding));
        }
        output.push_str(line.trim_end());
        output.push('\n');
    }
    output
}

/// `-` for the -1 the API uses for "unknown".
pub fn offset_cell(value: i64) -> String {
    if value < 0 {
        "-".to_string()
    } else {
        value.to_string()
    }
}

pub fn or_dash(text: &str) -> String {
    if text.is_empty() {
        "-".to_string()
    } else {
        text.to_string()
    }
}

/// A rate with a metric suffix: `0`, `950`, `12.3k`, `4.5M`.
pub fn human_rate(value: f64) -> String {
    human_number(value, "")
}

/// Bytes per second: `0 B/s`, `12.3 kB/s`, `4.5 MB/s`.
pub fn human_bytes_rate(value: f64) -> String {
    let text = human_number(value, "B");
    if text
        .chars()
        .last()
        .is_some_and(|last| last.is_ascii_digit())
    {
        format!("{text} B/s")
    } else {
        format!("{text}/s")
    }
}

fn human_number(value: f64, unit: &str) -> String {
    let value = value.max(0.0);
    let (scaled, suffix) = if value >= 1e9 {
        (value / 1e9, "G")
    } else if value >= 1e6 {
        (value / 1e6, "M")
    } else if value >= 1e3 {
        (value / 1e3, "k")
    } else {
        return format!("{}", value.round() as i64);
    };
    if unit.is_empty() {
        format!("{scaled:.1}{suffix}")
    } else {
        format!("{scaled:.1} {suffix}{unit}")
    }
}

/// A duration in whole units: `45s`, `3m20s`, `2h05m`.
pub fn human_duration(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "-".to_string();
    }
    let seconds = seconds.round() as u64;
    if seconds < 60 {
        format!("{seconds}s")
    } else if seconds < 3600 {
        format!("{}m{:02}s", seconds / 60, seconds % 60)
    } else {
        format!("{}h{:02}m", seconds / 3600, (seconds % 3600) / 60)
    }
}

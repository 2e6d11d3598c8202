//! The table every broker benchmark prints: one row per measurement, with its rate beside
//! the direct HSM baseline measured in the same run.

/// One line of the table.
pub struct Row {
    pub name: &'static str,
    pub callers: usize,
    pub ops_per_second: f64,
    /// Per call, in µs: `None` where not measured.
    pub latency: Option<(u64, u64)>,
    pub broker_cpu_us: Option<f64>,
    pub bench_cpu_us: f64,
}

/// The column titles; `unit` names what one operation is (`sign`, `op`).
pub fn print_header(unit: &str) {
    println!(
        "{:<26} {:>7} {:>9} {:>9} {:>9} {:>9} {:>12} {:>12}",
        "row", "callers", "ops/s", "vs direct", "p50 µs", "p99 µs", "broker CPU", "bench CPU"
    );
    let (count, per) = (format!("({unit}s)"), format!("µs/{unit}"));
    println!(
        "{:<26} {:>7} {:>9} {:>9} {:>9} {:>9} {:>12} {:>12}",
        "", "", count, "", "(call)", "(call)", per, per
    );
}

/// `row`, and its rate as a ratio of `direct` (the baseline) when given.
pub fn print_row(row: &Row, direct: Option<f64>) {
    let dash = || "-".to_string();
    let ratio = direct.map_or_else(dash, |d| format!("{:.2}x", row.ops_per_second / d));
    let (p50, p99) = row
        .latency
        .map_or_else(|| (dash(), dash()), |(a, b)| (a.to_string(), b.to_string()));
    let broker_cpu = row.broker_cpu_us.map_or_else(dash, |c| format!("{c:.1}"));
    println!(
        "{:<26} {:>7} {:>9.0} {:>9} {:>9} {:>9} {:>12} {:>12.1}",
        row.name, row.callers, row.ops_per_second, ratio, p50, p99, broker_cpu, row.bench_cpu_us
    );
}

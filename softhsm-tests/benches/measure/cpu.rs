//! CPU time of a process, for the "CPU µs/op" columns of the broker benchmarks: utime+stime
//! from `/proc/<pid>/stat`, read before and after a row.

/// utime+stime of a process, in seconds.
pub struct CpuClock {
    ticks_per_second: f64,
}

impl CpuClock {
    pub fn new() -> Self {
        let out = std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .unwrap();
        let ticks_per_second = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        CpuClock { ticks_per_second }
    }

    pub fn seconds(&self, pid: u32) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        // Fields after the command name, which is in parentheses: state is field 3,
        // utime and stime are fields 14 and 15.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        ticks as f64 / self.ticks_per_second
    }
}

/// CPU seconds per completed operation, in µs, of a process between two readings.
pub fn cpu_us_per_op(before: f64, after: f64, ops: u64) -> f64 {
    (after - before) * 1e6 / ops.max(1) as f64
}

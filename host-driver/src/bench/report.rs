//! The bench report for people: the same tables as aligned text (`kessai bench` on stdout) and
//! as Markdown (`kessai bench-report`, the generated section of `docs/bench.md`).

use super::hw::FLOWS;
use super::Report;
use crate::crypto::Scheme;

/// A titled table with an optional note under it.
#[derive(Clone, Debug)]
pub struct Table {
    pub title: String,
    pub note: String,
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
    /// What has no row, and why ("L = 2: not built: ...").
    pub missing: Vec<String>,
}

impl Table {
    fn new(title: impl Into<String>, headers: &[&str]) -> Table {
        Table {
            title: title.into(),
            note: String::new(),
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
            missing: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Columns padded to their widest cell; columns of numbers (a cell starting with a digit) to
    /// the right, header included.
    pub fn text(&self) -> String {
        let n = self.headers.len();
        let numeric: Vec<bool> =
            (0..n).map(|i| self.rows.iter().any(|r| r.get(i).is_some_and(|c| c.starts_with(|ch: char| ch.is_ascii_digit())))).collect();
        let width = |i: usize| {
            self.rows.iter().map(|r| r.get(i).map_or(0, |c| c.chars().count())).chain([self.headers[i].chars().count()]).max().unwrap_or(0)
        };
        let widths: Vec<usize> = (0..n).map(width).collect();
        let line = |cells: &[String]| {
            let mut s = String::new();
            for (i, w) in widths.iter().enumerate() {
                let c = cells.get(i).map(String::as_str).unwrap_or("");
                let pad = w.saturating_sub(c.chars().count());
                if i > 0 {
                    s.push_str("  ");
                }
                if numeric[i] {
                    s.push_str(&" ".repeat(pad));
                    s.push_str(c);
                } else {
                    s.push_str(c);
                    if i + 1 < n {
                        s.push_str(&" ".repeat(pad));
                    }
                }
            }
            s.trim_end().to_string() + "\n"
        };
        let mut s = format!("{}\n", self.title);
        if !self.rows.is_empty() {
            s += &line(&self.headers);
            for r in &self.rows {
                s += &line(r);
            }
        }
        for m in &self.missing {
            s += &format!("  {m}\n");
        }
        if !self.note.is_empty() && !self.rows.is_empty() {
            s += &format!("{}\n", self.note);
        }
        s
    }

    pub fn markdown(&self) -> String {
        let esc = |c: &str| md_escape(c).replace('|', "\\|");
        let mut s = format!("### {}\n\n", self.title);
        if !self.rows.is_empty() {
            s += &format!("| {} |\n", self.headers.iter().map(|h| esc(h)).collect::<Vec<_>>().join(" | "));
            s += &format!("|{}\n", "---|".repeat(self.headers.len()));
            for r in &self.rows {
                s += &format!("| {} |\n", r.iter().map(|c| esc(c)).collect::<Vec<_>>().join(" | "));
            }
        }
        if !self.missing.is_empty() {
            if !self.rows.is_empty() {
                s.push('\n');
            }
            for m in &self.missing {
                s += &format!("- {m}\n");
            }
        }
        if !self.note.is_empty() && !self.rows.is_empty() {
            s += &format!("\n{}\n", self.note);
        }
        s
    }
}

/// 190688.4 -> "190,688"; below 100 one decimal ("21.6").
pub fn rate(x: f64) -> String {
    if !x.is_finite() {
        return "-".into();
    }
    if x.abs() < 100.0 {
        return format!("{x:.1}");
    }
    let digits = format!("{:.0}", x.abs());
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    if x < 0.0 {
        out.insert(0, '-');
    }
    out
}

/// A ratio: "9.6×", "0.48×".
pub fn ratio(x: f64) -> String {
    if x >= 10.0 {
        format!("{x:.1}×")
    } else if x >= 0.01 {
        format!("{x:.2}×")
    } else {
        format!("{x:.4}×")
    }
}

fn count(x: u64) -> String {
    rate(x as f64)
}

fn scheme_name(s: Scheme) -> &'static str {
    match s {
        Scheme::Esign => "ESIGN",
        Scheme::RsaPkcs1 => "RSA",
        Scheme::RsaPss => "RSA-PSS",
    }
}

/// UTC date and time of a Unix timestamp: "2026-11-24 06:11 UTC".
pub fn utc(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Civil from days (H. Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02} UTC", secs / 3600, secs % 3600 / 60)
}

/// Every table of the report, in order.
pub fn tables(r: &Report) -> Vec<Table> {
    let mut out = Vec::new();

    // Software and peers.
    let mut t = Table::new(
        format!("Software verify, verifies/s (median of {} runs, {} ms per row)", r.runs, r.millis),
        &["implementation", "scheme", "bits", "e", "verifies/s", "× Kessai sw"],
    );
    for row in &r.rows {
        t.row(vec![
            row.implementation.clone(),
            scheme_name(row.scheme).into(),
            row.bits.to_string(),
            row.e.to_string(),
            rate(row.median_verifies_per_second),
            row.ratio_to_kessai_sw.map(ratio).unwrap_or_else(|| "-".into()),
        ]);
    }
    t.note = "× Kessai sw: this row over Kessai's software figure for the same scheme and size, measured in the same run (ESIGN: the fastest Kessai arithmetic; RSA: the rsa crate).".into();
    out.push(t);

    // RTL.
    let mut t = Table::new(
        "RTL: exact cycles per verify (simulated kessai_top, one verify per size)",
        &["scheme", "bits", "s", "lanes", "cycles (sim)", "formula", "limit P·(2s²+s)/L", "cycles / limit"],
    );
    for lanes in &r.rtl {
        if lanes.rows.is_empty() {
            t.missing.push(format!("L = {}: {}", lanes.lanes, lanes.status));
        }
        for row in &lanes.rows {
            t.row(vec![
                scheme_name(row.scheme).into(),
                row.bits.to_string(),
                row.words.to_string(),
                row.lanes.to_string(),
                count(row.cycles),
                if row.formula_cycles == row.cycles { format!("{} (=)", count(row.formula_cycles)) } else { format!("{} (≠)", count(row.formula_cycles)) },
                rate(row.limit),
                ratio(row.ratio_to_limit),
            ]);
        }
    }
    t.note = "s = modulus words of 16 bits; P = 7 products for ESIGN (e = 32), 19 for RSA (e = 65537). formula: docs/rtl.md, P·M + (P−1)(s+1) + 4s + 3 with M = s(2G+1) + G·L + 3, G = ⌈s/L⌉; (=) when it equals the simulated count.".into();
    out.push(t);

    // Boards.
    let mut t = Table::new(
        "Boards: verifies/s at Fmax (latest scripts/synth report)",
        &["board", "status", "lanes", "Fmax MHz (target)", "scheme", "bits", "cycles (source)", "verifies/s at Fmax", "at its clock"],
    );
    for b in &r.boards {
        let clocks = match (b.fmax_mhz, b.target_mhz) {
            (Some(f), Some(tg)) => format!("{f:.1} ({tg:.0})"),
            (Some(f), None) => format!("{f:.1}"),
            (None, Some(tg)) => format!("- ({tg:.0})"),
            (None, None) => "-".into(),
        };
        let lanes = b.lanes.map(|l| l.to_string()).unwrap_or_else(|| "-".into());
        if b.rates.is_empty() {
            t.missing.push(format!("{}: {}", b.board, b.status));
        }
        for x in &b.rates {
            t.row(vec![
                b.board.clone(),
                b.status.clone(),
                lanes.clone(),
                clocks.clone(),
                scheme_name(x.scheme).into(),
                x.bits.to_string(),
                format!("{} ({})", count(x.cycles), x.cycles_source),
                x.verifies_per_second_at_fmax.map(rate).unwrap_or_else(|| "-".into()),
                x.verifies_per_second_at_target.map(rate).unwrap_or_else(|| "-".into()),
            ]);
        }
    }
    t.note = "Fmax: the slowest clock nextpnr reports; its clock: what the PLL makes of the target (report.json core_hz). cycles: sim = measured in this run at the board's lane count; formula = docs/rtl.md (exact) where that lane count was not simulated.".into();
    out.push(t);

    // Link.
    let mut t = Table::new(
        "Link: pipelined VERIFY requests through the UART",
        &["scheme", "bits", "request B", "reply B", "baud", "UART bound/s", "compute bound/s", "measured/s", "measured / UART bound", "verifies"],
    );
    if r.link.rows.is_empty() {
        t.missing.push(r.link.status.clone());
    }
    for x in &r.link.rows {
        t.row(vec![
            scheme_name(x.scheme).into(),
            x.bits.to_string(),
            x.request_bytes.to_string(),
            x.reply_bytes.to_string(),
            x.baud.map(|b| format!("{b:.0}")).unwrap_or_else(|| "-".into()),
            x.uart_bound_per_second.map(rate).unwrap_or_else(|| "-".into()),
            x.compute_bound_per_second.map(rate).unwrap_or_else(|| "-".into()),
            rate(x.board_rate()),
            x.ratio_to_uart_bound.map(ratio).unwrap_or_else(|| "-".into()),
            x.verifies.to_string(),
        ]);
    }
    t.note = format!(
        "{}. UART bound: baud / 10 / max(request, reply) (full duplex, requests pipelined); compute bound: clock / cycles per verify. measured/s: in simulated time on the simulator (the board's own clock), wall time on a board.",
        r.link.status
    );
    out.push(t);

    // Per transaction.
    if let Some(first) = r.transactions.first() {
        let mut headers = vec!["backend".to_string(), "basis".into(), format!("{}-{} verifies/s", scheme_name(first.scheme), first.bits)];
        headers.extend(FLOWS.iter().map(|f| format!("{} ({} checks)/s", f.short, f.checks)));
        let h: Vec<&str> = headers.iter().map(String::as_str).collect();
        let mut t = Table::new("Per transaction: payments per second each backend sustains", &h);
        for x in &r.transactions {
            let mut row = vec![x.backend.clone(), x.basis.clone(), rate(x.verifies_per_second)];
            row.extend(x.flows.iter().map(|f| rate(f.payments_per_second)));
            t.row(row);
        }
        t.note = format!(
            "Checks per payment, as the terminal batches them (terminal.rs, Terminal::pay): {}. Only the terminal's signature checks are counted, not its own signing or the card's work.",
            FLOWS.iter().map(|f| format!("{}: {}", f.name, f.what)).collect::<Vec<_>>().join("; ")
        );
        out.push(t);
    }
    out
}

fn not_measured(r: &Report) -> Vec<String> {
    r.unavailable.clone()
}

/// The run's header line.
pub fn header(r: &Report) -> String {
    let mut s = format!(
        "Run {} on {} ({} cores, {}), kessai {}, backend {}",
        utc(r.machine.unix_time),
        r.machine.cpu,
        r.machine.cores,
        r.machine.os,
        r.machine.kessai,
        r.backend
    );
    if !r.command.is_empty() {
        s += &format!(": `{}`", r.command);
    }
    s
}

/// `kessai bench` on stdout.
pub fn text(r: &Report) -> String {
    let mut s = header(r) + "\n\n";
    for t in tables(r) {
        s += &t.text();
        s.push('\n');
    }
    for u in not_measured(r) {
        s += &format!("not measured: {u}\n");
    }
    s
}

/// The generated section of docs/bench.md.
pub fn markdown(r: &Report, svg_name: Option<&str>) -> String {
    let mut s = format!("{}.\n\n", md_escape(&header(r)));
    if !r.machine.peers.is_empty() {
        s += &format!("Peers: {}.\n\n", md_escape(&r.machine.peers.join("; ")));
    }
    if let Some(svg) = svg_name {
        s += &format!("![verifies/s vs modulus size, log scale]({svg})\n\n");
    }
    for t in tables(r) {
        s += &t.markdown();
        s.push('\n');
    }
    let nm = not_measured(r);
    if !nm.is_empty() {
        s += "### Not measured\n\n";
        for u in nm {
            s += &format!("- {}\n", md_escape(&u));
        }
        s.push('\n');
    }
    s
}

/// Text for Markdown outside code spans: `<` and `>` as entities (`ESIGN<SHA256>` is not a tag).
fn md_escape(s: &str) -> String {
    let mut out = String::new();
    let mut in_code = false;
    for ch in s.chars() {
        match ch {
            '`' => {
                in_code = !in_code;
                out.push(ch);
            }
            '<' if !in_code => out.push_str("&lt;"),
            '>' if !in_code => out.push_str("&gt;"),
            _ => out.push(ch),
        }
    }
    out
}

pub const BEGIN: &str = "<!-- BEGIN kessai bench-report: generated from the JSON by scripts/bench-report; do not edit by hand -->";
pub const END: &str = "<!-- END kessai bench-report -->";

/// `doc` with the text between [`BEGIN`] and [`END`] replaced by `section` (appended, with the
/// markers, when `doc` has none).
pub fn splice(doc: &str, section: &str) -> String {
    let body = format!("{BEGIN}\n\n{}\n{END}", section.trim_end());
    match (doc.find(BEGIN), doc.find(END)) {
        (Some(a), Some(b)) if b > a => format!("{}{}{}", &doc[..a], body, &doc[b + END.len()..]),
        _ => {
            let mut d = doc.trim_end().to_string();
            if !d.is_empty() {
                d.push_str("\n\n");
            }
            d + &body + "\n"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_formatted_for_people() {
        assert_eq!(rate(190_688.4), "190,688");
        assert_eq!(rate(1_234_567.0), "1,234,567");
        assert_eq!(rate(999.6), "1,000");
        assert_eq!(rate(21.64), "21.6");
        assert_eq!((ratio(9.61), ratio(12.34)), ("9.61×".to_string(), "12.3×".to_string()));
        assert_eq!(ratio(0.4812), "0.48×");
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(1_795_940_000), "2026-11-29 08:13 UTC");
    }

    #[test]
    fn splice_replaces_only_the_generated_section() {
        let doc = format!("# Title\n\nintro\n\n{BEGIN}\nold table\n{END}\n\nafter\n");
        let out = splice(&doc, "new table\n");
        assert!(out.starts_with("# Title\n\nintro\n\n"));
        assert!(out.contains("new table") && !out.contains("old table"));
        assert!(out.ends_with("\n\nafter\n"));
        assert_eq!(splice(&out, "new table\n"), out, "idempotent");
        let fresh = splice("# T\n", "x");
        assert_eq!(fresh, format!("# T\n\n{BEGIN}\n\nx\n{END}\n"));
    }

    #[test]
    fn markdown_keeps_angle_brackets_visible() {
        assert_eq!(md_escape("Crypto++ ESIGN<SHA256>; `a<b`"), "Crypto++ ESIGN&lt;SHA256&gt;; `a<b`");
    }

    #[test]
    fn text_tables_align_columns() {
        let mut t = Table::new("T", &["name", "rate"]);
        t.row(vec!["a".into(), "1,000".into()]);
        t.row(vec!["longer".into(), "5.0".into()]);
        assert_eq!(t.text(), "T\nname     rate\na       1,000\nlonger    5.0\n");
        assert_eq!(t.markdown(), "### T\n\n| name | rate |\n|---|---|\n| a | 1,000 |\n| longer | 5.0 |\n");
    }
}

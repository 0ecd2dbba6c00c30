//! The report: a markdown table of rows (measurement, ours, baseline, ratio, goal, met?) and
//! the details under it.

/// Whether a row met its goal.
#[derive(Clone, Debug, PartialEq)]
pub enum Met {
    /// Met.
    Yes,
    /// Missed.
    No,
    /// The row has no goal.
    NoGoal,
    /// The row could not run (the text says why).
    NotRun(String),
}

/// One line of the table.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// What was measured.
    pub measurement: String,
    /// Our figure.
    pub ours: String,
    /// The baseline's figure (same run).
    pub baseline: String,
    /// Ours against the baseline.
    pub ratio: String,
    /// The goal, in words.
    pub goal: String,
    /// Whether the goal was met.
    pub met: Met,
}

impl Row {
    /// A row that could not run, with the reason.
    pub fn not_run(measurement: impl Into<String>, goal: impl Into<String>, why: &str) -> Row {
        Row {
            measurement: measurement.into(),
            ours: "—".into(),
            baseline: "—".into(),
            ratio: "—".into(),
            goal: goal.into(),
            met: Met::NotRun(why.to_owned()),
        }
    }
}

/// A checked goal: `Met::Yes` or `Met::No`.
pub fn met(ok: bool) -> Met {
    if ok {
        Met::Yes
    } else {
        Met::No
    }
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// The rows as a markdown table.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| measurement | ours | baseline | ratio | goal | met? |\n|---|---|---|---|---|---|\n",
    );
    for row in rows {
        let met = match &row.met {
            Met::Yes => "yes".to_owned(),
            Met::No => "**no**".to_owned(),
            Met::NoGoal => "—".to_owned(),
            Met::NotRun(why) => why.clone(),
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            cell(&row.measurement),
            cell(&row.ours),
            cell(&row.baseline),
            cell(&row.ratio),
            cell(&row.goal),
            cell(&met)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_markdown() {
        let rows = [
            Row {
                measurement: "cycle | TCG".into(),
                ours: "85.0 ms".into(),
                baseline: "84.0 ms".into(),
                ratio: "1.01×".into(),
                goal: "≤ 1.05×".into(),
                met: met(true),
            },
            Row::not_run(
                "vs Python",
                "≥ 1.2× faster",
                "not run: `pip install qemu.qmp`",
            ),
        ];
        let text = table(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(
            lines[0],
            "| measurement | ours | baseline | ratio | goal | met? |"
        );
        assert_eq!(
            lines[2],
            "| cycle \\| TCG | 85.0 ms | 84.0 ms | 1.01× | ≤ 1.05× | yes |"
        );
        assert!(lines[3].ends_with("| ≥ 1.2× faster | not run: `pip install qemu.qmp` |"));
        assert_eq!(met(false), Met::No);
    }
}

//! A small text table for the terminal reports (`check`, the demo's summary): fixed-width
//! columns, left or right aligned, and an optional free-text column at the end.

use std::fmt::Write as _;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Align {
    Left,
    Right,
}

/// One column: its header, its width (wider cells are not cut), and its alignment.
#[derive(Clone, Copy, Debug)]
pub struct Column {
    header: &'static str,
    width: usize,
    align: Align,
    /// Spaces before the column.
    gap: usize,
}

impl Column {
    pub const fn left(header: &'static str, width: usize) -> Self {
        Self {
            header,
            width,
            align: Align::Left,
            gap: 1,
        }
    }

    pub const fn right(header: &'static str, width: usize) -> Self {
        Self {
            header,
            width,
            align: Align::Right,
            gap: 1,
        }
    }

    /// A free-text column after two spaces, as wide as its text.
    pub const fn text(header: &'static str) -> Self {
        Self {
            header,
            width: 0,
            align: Align::Left,
            gap: 2,
        }
    }
}

/// Rows of cells under a header line.
#[derive(Clone, Debug)]
pub struct Table {
    columns: Vec<Column>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(columns: impl Into<Vec<Column>>) -> Self {
        Self {
            columns: columns.into(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are blank, extra cells are dropped.
    pub fn row(&mut self, cells: impl IntoIterator<Item = String>) {
        self.rows.push(cells.into_iter().collect());
    }

    /// The header line after `header_prefix`, then each row after `row_prefix`; one line
    /// each, without trailing spaces.
    pub fn render(&self, header_prefix: &str, row_prefix: &str) -> String {
        let mut out = String::new();
        let headers: Vec<String> = self.columns.iter().map(|c| c.header.to_owned()).collect();
        self.line(&mut out, header_prefix, &headers);
        for row in &self.rows {
            self.line(&mut out, row_prefix, row);
        }
        out
    }

    fn line(&self, out: &mut String, prefix: &str, cells: &[String]) {
        let mut line = prefix.to_owned();
        for (i, column) in self.columns.iter().enumerate() {
            let cell = cells.get(i).map_or("", String::as_str);
            if i > 0 {
                line.push_str(&" ".repeat(column.gap));
            }
            let width = column.width;
            let _ = match column.align {
                Align::Left => write!(line, "{cell:<width$}"),
                Align::Right => write!(line, "{cell:>width$}"),
            };
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_padded_aligned_and_trimmed() {
        let mut t = Table::new([
            Column::left("name", 6),
            Column::right("ms", 5),
            Column::text("note"),
        ]);
        t.row(["a".to_owned(), "1.5".to_owned(), "ok".to_owned()]);
        t.row(["longer-name".to_owned(), "12.0".to_owned()]);
        assert_eq!(
            t.render("> ", "  "),
            "> name      ms  note\n  a        1.5  ok\n  longer-name  12.0\n"
        );
    }
}

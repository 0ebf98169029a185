//! A minimal aligned-column table printer, the way `docker ps` lays out its output.

/// Columns are separated by this many spaces at least.
const GAP: usize = 3;

/// A table with a header row; cells are plain strings.
#[derive(Debug, Clone, Default)]
pub struct Table {
    headers: Vec<String>,
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers, all left-aligned.
    pub fn new(headers: &[&str]) -> Self {
        Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            right: vec![false; headers.len()],
            rows: Vec::new(),
        }
    }

    /// Right-align these columns (numbers read better that way).
    pub fn right_align(mut self, columns: &[usize]) -> Self {
        for &c in columns {
            if let Some(r) = self.right.get_mut(c) {
                *r = true;
            }
        }
        self
    }

    /// Add a row; missing cells are empty, extra cells are dropped.
    pub fn row<I, S>(&mut self, cells: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut row: Vec<String> = cells
            .into_iter()
            .map(Into::into)
            .take(self.headers.len())
            .collect();
        row.resize(self.headers.len(), String::new());
        self.rows.push(row);
    }

    /// Whether no row was added.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as lines of text, each ending in a newline, without trailing spaces.
    pub fn render(&self) -> String {
        let width = |s: &str| s.chars().count();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(width(cell));
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.headers).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str(&" ".repeat(GAP));
                }
                let pad = " ".repeat(widths[i] - width(cell));
                if self.right[i] {
                    line.push_str(&pad);
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    line.push_str(&pad);
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_columns_and_trims_line_ends() {
        let mut t = Table::new(&["NAME", "PACKETS", "NOTE"]).right_align(&[1]);
        t.row(["a", "5", "x"]);
        t.row(["longer-name", "12345", ""]);
        assert_eq!(
            t.render(),
            "NAME          PACKETS   NOTE\n\
             a                   5   x\n\
             longer-name     12345\n"
        );
    }

    #[test]
    fn header_only_and_ragged_rows() {
        let t = Table::new(&["A", "B"]);
        assert!(t.is_empty());
        assert_eq!(t.render(), "A   B\n");
        let mut t = Table::new(&["A", "B"]);
        t.row(["1"]);
        t.row(["1", "2", "3"]);
        assert_eq!(t.render(), "A   B\n1\n1   2\n");
    }

    #[test]
    fn counts_characters_not_bytes() {
        let mut t = Table::new(&["N", "V"]);
        t.row(["ä", "1"]);
        t.row(["ab", "2"]);
        assert_eq!(t.render(), "N    V\nä    1\nab   2\n");
    }
}

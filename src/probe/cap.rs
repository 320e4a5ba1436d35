//! The series cap of the offsets and consumer group checks: whole topics (or groups) are
//! kept in name order while their series fit under `max_series`; the rest is left out and
//! counted.

/// What the cap kept, and what it left out.
#[derive(Debug, PartialEq, Eq)]
pub struct Capped<T> {
    pub kept: Vec<T>,
    /// Topics (or groups) left out.
    pub left_out: usize,
    /// Their series, as far as known (groups left out before their offsets were read count
    /// one series each: a lower bound).
    pub series: usize,
}

/// Keeps `items` (in the order given) while their series, `cost` each, fit under
/// `max_series`; once one does not fit, it and every later one is left out, so what is kept
/// does not depend on the size of later items.
pub fn cap<T>(items: Vec<T>, max_series: usize, cost: impl Fn(&T) -> usize) -> Capped<T> {
    let mut series = 0;
    let mut capped = Capped {
        kept: Vec::with_capacity(items.len()),
        left_out: 0,
        series: 0,
    };
    for item in items {
        let c = cost(&item);
        if capped.left_out == 0 && series + c <= max_series {
            series += c;
            capped.kept.push(item);
        } else {
            capped.left_out += 1;
            capped.series += c;
        }
    }
    capped
}

impl<T> Default for Capped<T> {
    fn default() -> Self {
        Self {
            kept: Vec::new(),
            left_out: 0,
            series: 0,
        }
    }
}

/// The room left under `max_series` once `used` series are taken.
pub fn room(max_series: usize, used: usize) -> usize {
    max_series.saturating_sub(used)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_items_are_kept_in_order_until_one_does_not_fit() {
        let capped = cap(vec![3, 4, 2, 1], 8, |n| *n);
        assert_eq!(
            capped,
            Capped {
                kept: vec![3, 4],
                left_out: 2,
                series: 3
            }
        );
        let all = cap(vec![1, 2], 3, |n| *n);
        assert_eq!((all.kept.len(), all.left_out, all.series), (2, 0, 0));
        let none = cap(vec![5], 4, |n| *n);
        assert_eq!((none.kept.len(), none.left_out, none.series), (0, 1, 5));
    }
}

//! Majority arithmetic: pure functions, no state.

/// The highest value that a majority of `values` has reached: sort
/// descending and take the `quorum`-th. With the voters' match indexes this is
/// the highest replicated index; with their acknowledged rounds, the latest
/// round a quorum confirmed.
pub(crate) fn quorum_value(mut values: Vec<u64>, quorum: usize) -> Option<u64> {
    if quorum == 0 || values.len() < quorum {
        return None;
    }
    values.sort_unstable_by(|a, b| b.cmp(a));
    Some(values[quorum - 1])
}

/// The outcome of a vote count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VoteResult {
    Won,
    Lost,
    Pending,
}

/// Counts `granted` and `rejected` votes out of `voters`.
pub(crate) fn tally(voters: usize, granted: usize, rejected: usize) -> VoteResult {
    let quorum = voters / 2 + 1;
    if granted >= quorum {
        VoteResult::Won
    } else if voters - rejected < quorum {
        VoteResult::Lost
    } else {
        VoteResult::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_value_cases() {
        struct Case {
            name: &'static str,
            values: Vec<u64>,
            quorum: usize,
            want: Option<u64>,
        }
        let cases = [
            Case {
                name: "single voter",
                values: vec![7],
                quorum: 1,
                want: Some(7),
            },
            Case {
                name: "three voters, median",
                values: vec![5, 9, 1],
                quorum: 2,
                want: Some(5),
            },
            Case {
                name: "five voters",
                values: vec![1, 2, 3, 4, 5],
                quorum: 3,
                want: Some(3),
            },
            Case {
                name: "four voters need three",
                values: vec![9, 9, 1, 1],
                quorum: 3,
                want: Some(1),
            },
            Case {
                name: "too few values",
                values: vec![4],
                quorum: 2,
                want: None,
            },
            Case {
                name: "no voters",
                values: vec![],
                quorum: 0,
                want: None,
            },
        ];
        for c in cases {
            assert_eq!(quorum_value(c.values, c.quorum), c.want, "case {}", c.name);
        }
    }

    #[test]
    fn tally_cases() {
        let cases = [
            ("1 voter granted", 1, 1, 0, VoteResult::Won),
            ("3 voters, 2 granted", 3, 2, 0, VoteResult::Won),
            (
                "3 voters, 1 granted 1 rejected",
                3,
                1,
                1,
                VoteResult::Pending,
            ),
            ("3 voters, 2 rejected", 3, 1, 2, VoteResult::Lost),
            ("4 voters, 2 granted 2 rejected", 4, 2, 2, VoteResult::Lost),
            ("5 voters, 3 granted", 5, 3, 1, VoteResult::Won),
        ];
        for (name, voters, granted, rejected, want) in cases {
            assert_eq!(tally(voters, granted, rejected), want, "case {name}");
        }
    }
}

//! Three-valued (Kleene) truth, and how the comparisons of an attribute's several values fold
//! into one truth per span.

/// Kleene truth value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tri {
    F,
    T,
    /// Unknown: some operand was nil (or not a boolean where one was needed).
    N,
}

impl Tri {
    pub(crate) fn from_bool(b: bool) -> Tri {
        if b { Tri::T } else { Tri::F }
    }

    pub(super) fn not(self) -> Tri {
        match self {
            Tri::F => Tri::T,
            Tri::T => Tri::F,
            Tri::N => Tri::N,
        }
    }

    pub(super) fn and(self, other: Tri) -> Tri {
        match (self, other) {
            (Tri::F, _) | (_, Tri::F) => Tri::F,
            (Tri::T, Tri::T) => Tri::T,
            _ => Tri::N,
        }
    }

    pub(super) fn or(self, other: Tri) -> Tri {
        match (self, other) {
            (Tri::T, _) | (_, Tri::T) => Tri::T,
            (Tri::F, Tri::F) => Tri::F,
            _ => Tri::N,
        }
    }
}

/// Folds one value's comparison result into a per-span state that starts at `N` (no value).
/// `r` is the result of the positive operator, `None` when the types do not compare (false
/// either way). Positive operators: true if any value satisfies. Negated ones: true if every
/// value is comparable and none equals (matches).
// Called per attribute entry from other files of the evaluator: inlined across them.
#[inline]
pub(crate) fn fold(negated: bool, state: Tri, r: Option<bool>) -> Tri {
    if negated {
        match r {
            Some(false) if state != Tri::F => Tri::T,
            _ => Tri::F,
        }
    } else {
        match r {
            Some(true) => Tri::T,
            _ if state == Tri::T => Tri::T,
            _ => Tri::F,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kleene_logic() {
        use Tri::*;
        let all = [F, T, N];
        let and = [[F, F, F], [F, T, N], [F, N, N]];
        let or = [[F, T, N], [T, T, T], [N, T, N]];
        for (i, a) in all.iter().enumerate() {
            for (j, b) in all.iter().enumerate() {
                assert_eq!(a.and(*b), and[i][j], "{a:?} && {b:?}");
                assert_eq!(a.or(*b), or[i][j], "{a:?} || {b:?}");
            }
        }
        assert_eq!([F, T, N].map(Tri::not), [T, F, N]);
    }

    #[test]
    fn several_values_any_for_positive_none_for_negated() {
        let folded = |negated, results: &[Option<bool>]| results.iter().fold(Tri::N, |s, r| fold(negated, s, *r));
        // = : one equal value is enough; a value of another type is just not equal.
        assert_eq!(folded(false, &[Some(false), Some(true)]), Tri::T);
        assert_eq!(folded(false, &[None, Some(false)]), Tri::F);
        // != : every value must be comparable and different.
        assert_eq!(folded(true, &[Some(false), Some(false)]), Tri::T);
        assert_eq!(folded(true, &[Some(false), Some(true)]), Tri::F);
        assert_eq!(folded(true, &[None]), Tri::F);
        assert_eq!(folded(true, &[]), Tri::N);
    }
}

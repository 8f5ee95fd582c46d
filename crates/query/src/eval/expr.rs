//! Compiled field expressions ([`Expr`]) and their evaluation over a batch, a column at a
//! time: to a truth per row where a condition is needed, to a value per row elsewhere.

use spoor_traceql::ast::{BinOp, Static};

use super::compare::{Matcher, Op, compare};
use super::field::Field;
use super::source::Ctx;
use super::truth::Tri;
use super::value::{Val, arith, negate};
use crate::error::Result;

/// A compiled field expression.
#[derive(Clone, Debug)]
pub(crate) enum Expr {
    Const(Static),
    /// A bare reference (`{ .cached }`, an operand of arithmetic, a `by()` key).
    Field(Field),
    /// `field OP literal`: the fast path.
    Match {
        field: Field,
        m: Matcher,
    },
    /// `field = nil` (`nil: true`) or `field != nil`: absence is an answer here, never nil.
    IsNil {
        field: Field,
        nil: bool,
    },
    /// `expr OP literal` for a computed left-hand side.
    MatchValue {
        expr: Box<Expr>,
        m: Matcher,
    },
    ValueIsNil {
        expr: Box<Expr>,
        nil: bool,
    },
    /// Two computed operands.
    Compare {
        op: Op,
        negated: bool,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Neg(Box<Expr>),
    Arith {
        op: BinOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
}

impl Expr {
    pub(crate) fn fields<'e>(&'e self, out: &mut Vec<&'e Field>) {
        match self {
            Expr::Const(_) => {}
            Expr::Field(f) | Expr::Match { field: f, .. } | Expr::IsNil { field: f, .. } => out.push(f),
            Expr::MatchValue { expr, .. } | Expr::ValueIsNil { expr, .. } | Expr::Not(expr) | Expr::Neg(expr) => {
                expr.fields(out)
            }
            Expr::Compare { lhs, rhs, .. }
            | Expr::And(lhs, rhs)
            | Expr::Or(lhs, rhs)
            | Expr::Arith { lhs, rhs, .. } => {
                lhs.fields(out);
                rhs.fields(out);
            }
        }
    }

    /// The truth of the expression for every row of the batch.
    pub(crate) fn tri<'c>(&'c self, ctx: &Ctx<'c>) -> Result<Vec<Tri>> {
        let n = ctx.rows;
        Ok(match self {
            Expr::Const(v) => vec![Val::of(v).truth(); n],
            Expr::Match { field, m } => ctx.source(field)?.test(m, n),
            Expr::IsNil { field, nil } => ctx.source(field)?.nil_test(*nil, n),
            Expr::MatchValue { expr, m } => expr.vals(ctx)?.iter().map(|v| m.test(v)).collect(),
            Expr::ValueIsNil { expr, nil } => {
                expr.vals(ctx)?.iter().map(|v| Tri::from_bool(v.is_nil() == *nil)).collect()
            }
            Expr::Compare { op, negated, lhs, rhs } => {
                let (a, b) = (lhs.vals(ctx)?, rhs.vals(ctx)?);
                a.iter().zip(&b).map(|(a, b)| compare(*op, *negated, a, b)).collect()
            }
            Expr::Not(e) => e.tri(ctx)?.into_iter().map(Tri::not).collect(),
            Expr::And(a, b) => {
                let mut out = a.tri(ctx)?;
                out.iter_mut().zip(b.tri(ctx)?).for_each(|(x, y)| *x = x.and(y));
                out
            }
            Expr::Or(a, b) => {
                let mut out = a.tri(ctx)?;
                out.iter_mut().zip(b.tri(ctx)?).for_each(|(x, y)| *x = x.or(y));
                out
            }
            Expr::Field(_) | Expr::Neg(_) | Expr::Arith { .. } => self.vals(ctx)?.iter().map(Val::truth).collect(),
        })
    }

    /// The value of the expression for every row of the batch.
    pub(crate) fn vals<'c>(&'c self, ctx: &Ctx<'c>) -> Result<Vec<Val<'c>>> {
        let n = ctx.rows;
        Ok(match self {
            Expr::Const(v) => vec![Val::of(v); n],
            Expr::Field(f) => ctx.source(f)?.values(n),
            Expr::Neg(e) => e.vals(ctx)?.iter().map(negate).collect(),
            Expr::Arith { op, lhs, rhs } => {
                let (a, b) = (lhs.vals(ctx)?, rhs.vals(ctx)?);
                a.iter().zip(&b).map(|(a, b)| arith(*op, a, b)).collect()
            }
            _ => self
                .tri(ctx)?
                .into_iter()
                .map(|t| match t {
                    Tri::T => Val::Bool(true),
                    Tri::F => Val::Bool(false),
                    Tri::N => Val::Nil,
                })
                .collect(),
        })
    }
}

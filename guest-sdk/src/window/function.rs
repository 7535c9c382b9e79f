//! What a window computes from its records.

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Aggregator, Error};

/// How a window folds its records into an accumulator (kept in keyed state)
/// and what it makes of it when it fires. [`Reduce`], [`Aggregate`] and
/// [`Collect`] cover Flink's reduce, aggregate and process windows.
pub trait WindowFunction: 'static {
    /// What a record contributes.
    type In: Clone;
    /// What a window keeps.
    type Acc: Serialize + DeserializeOwned;
    /// What a window gives when it fires.
    type Out;
    /// The accumulator of a window whose first record this is.
    fn first(&self, input: Self::In) -> Result<Self::Acc, Error>;
    /// Folds one more record in.
    fn add(&self, acc: &mut Self::Acc, input: Self::In) -> Result<(), Error>;
    /// One accumulator for two windows that became one (sessions).
    fn merge(&self, a: Self::Acc, b: Self::Acc) -> Result<Self::Acc, Error>;
    /// The window's result.
    fn result(&self, acc: &Self::Acc) -> Self::Out;
}

/// Folds a window's values with a function (Flink's `ReduceFunction`).
pub struct Reduce<T> {
    reduce: fn(T, T) -> T,
}

impl<T> Reduce<T> {
    pub(super) fn new(reduce: fn(T, T) -> T) -> Self {
        Self { reduce }
    }
}

impl<T: Serialize + DeserializeOwned + Clone + 'static> WindowFunction for Reduce<T> {
    type In = T;
    type Acc = T;
    type Out = T;

    fn first(&self, input: T) -> Result<T, Error> {
        Ok(input)
    }

    fn add(&self, acc: &mut T, input: T) -> Result<(), Error> {
        *acc = (self.reduce)(acc.clone(), input);
        Ok(())
    }

    fn merge(&self, a: T, b: T) -> Result<T, Error> {
        Ok((self.reduce)(a, b))
    }

    fn result(&self, acc: &T) -> T {
        acc.clone()
    }
}

/// Feeds a window's values to an [`Aggregator`] (Flink's `AggregateFunction`).
pub struct Aggregate<A> {
    aggregator: A,
}

impl<A> Aggregate<A> {
    pub(super) fn new(aggregator: A) -> Self {
        Self { aggregator }
    }
}

impl<A: Aggregator> WindowFunction for Aggregate<A>
where
    A::In: Clone,
{
    type In = A::In;
    type Acc = A::Acc;
    type Out = A::Out;

    fn first(&self, input: A::In) -> Result<A::Acc, Error> {
        Ok(self.aggregator.add(self.aggregator.create(), input))
    }

    fn add(&self, acc: &mut A::Acc, input: A::In) -> Result<(), Error> {
        let old = std::mem::replace(acc, self.aggregator.create());
        *acc = self.aggregator.add(old, input);
        Ok(())
    }

    fn merge(&self, a: A::Acc, b: A::Acc) -> Result<A::Acc, Error> {
        self.aggregator.merge(a, b).ok_or_else(|| {
            Error::new("session windows need an aggregator that merges (Aggregator::merge)")
        })
    }

    fn result(&self, acc: &A::Acc) -> A::Out {
        self.aggregator.result(acc)
    }
}

/// Keeps every value of a window and gives them all when it fires, in the
/// order they arrived (Flink's `ProcessWindowFunction`).
pub struct Collect<T> {
    _type: PhantomData<fn() -> T>,
}

impl<T> Collect<T> {
    pub(super) fn new() -> Self {
        Self { _type: PhantomData }
    }
}

impl<T: Serialize + DeserializeOwned + Clone + 'static> WindowFunction for Collect<T> {
    type In = T;
    type Acc = Vec<T>;
    type Out = Vec<T>;

    fn first(&self, input: T) -> Result<Vec<T>, Error> {
        Ok(vec![input])
    }

    fn add(&self, acc: &mut Vec<T>, input: T) -> Result<(), Error> {
        acc.push(input);
        Ok(())
    }

    fn merge(&self, mut a: Vec<T>, b: Vec<T>) -> Result<Vec<T>, Error> {
        a.extend(b);
        Ok(a)
    }

    fn result(&self, acc: &Vec<T>) -> Vec<T> {
        acc.clone()
    }
}

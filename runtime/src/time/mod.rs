//! Time: the timer store (the rest of the timer driver lands with the reactor).

pub(crate) mod wheel;

//! Compression methods (docs/algorithms.md §2–§5): the compressed layer forms,
//! the methods that train them, recipes, the compressed-model format and
//! export.

pub mod distill;
pub mod factorize;
pub mod format;
pub mod layers;
pub mod losparse;
pub mod lpaf;
pub mod pipeline;
pub mod prune;
pub mod rank;
pub mod recipe;

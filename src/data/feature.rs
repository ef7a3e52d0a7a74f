//! One tokenized row and its target: what the readers (`dataset`,
//! `squad`) produce and the batcher consumes. Its own file so that neither
//! reader imports the other for it.

/// The target of one feature.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FeatureLabel {
    None,
    Class(u32),
    Value(f32),
    /// Token positions of the answer (0, 0 = no answer in this window).
    Span {
        start: u32,
        end: u32,
    },
}

/// One tokenized row, special tokens included, unpadded.
#[derive(Clone, Debug, PartialEq)]
pub struct Feature {
    pub input_ids: Vec<u32>,
    pub token_type_ids: Vec<u8>,
    pub label: FeatureLabel,
}

//! The table of GGUF tensor types kiln handles.
//!
//! Ids, block sizes and bytes per block are those of ggml's `ggml_type` enum and
//! `type_traits` table (ggml/src/ggml.c); a GGUF file stores the id, so these numbers are a
//! file-format contract, not a choice.

use std::fmt;
use std::str::FromStr;

/// A GGUF tensor type. The discriminant is the id stored in GGUF files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum GgmlType {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q8_1 = 9,
    Q2K = 10,
    Q3K = 11,
    Q4K = 12,
    Q5K = 13,
    Q6K = 14,
    Q8K = 15,
    IQ4NL = 20,
    IQ4XS = 23,
    BF16 = 30,
}

/// One row of the type table.
#[derive(Debug, Clone, Copy)]
pub struct TypeInfo {
    /// The ggml / GGUF name (`q4_K`, `f32`, …).
    pub name: &'static str,
    /// Values per block (1 for the float types).
    pub block_size: usize,
    /// Bytes per block.
    pub type_size: usize,
    /// The activation type a dot product with this weight type uses (ggml's `vec_dot_type`).
    pub vec_dot_type: GgmlType,
    /// True for types a model file stores weights in (every type but the activation-only
    /// Q8_1 and Q8_K).
    pub is_storage: bool,
}

/// Every type in the table, in id order.
pub const ALL_TYPES: [GgmlType; 17] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q8_1,
    GgmlType::Q2K,
    GgmlType::Q3K,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
    GgmlType::Q8K,
    GgmlType::IQ4NL,
    GgmlType::IQ4XS,
    GgmlType::BF16,
];

impl GgmlType {
    /// The table row for this type.
    pub const fn info(self) -> TypeInfo {
        use GgmlType::*;
        const fn row(
            name: &'static str,
            block_size: usize,
            type_size: usize,
            vec_dot_type: GgmlType,
            is_storage: bool,
        ) -> TypeInfo {
            TypeInfo {
                name,
                block_size,
                type_size,
                vec_dot_type,
                is_storage,
            }
        }
        match self {
            F32 => row("f32", 1, 4, F32, true),
            F16 => row("f16", 1, 2, F16, true),
            BF16 => row("bf16", 1, 2, BF16, true),
            Q4_0 => row("q4_0", 32, 18, Q8_0, true),
            Q4_1 => row("q4_1", 32, 20, Q8_1, true),
            Q5_0 => row("q5_0", 32, 22, Q8_0, true),
            Q5_1 => row("q5_1", 32, 24, Q8_1, true),
            Q8_0 => row("q8_0", 32, 34, Q8_0, true),
            Q8_1 => row("q8_1", 32, 36, Q8_1, false),
            Q2K => row("q2_K", 256, 84, Q8K, true),
            Q3K => row("q3_K", 256, 110, Q8K, true),
            Q4K => row("q4_K", 256, 144, Q8K, true),
            Q5K => row("q5_K", 256, 176, Q8K, true),
            Q6K => row("q6_K", 256, 210, Q8K, true),
            Q8K => row("q8_K", 256, 292, Q8K, false),
            IQ4NL => row("iq4_nl", 32, 18, Q8_0, true),
            IQ4XS => row("iq4_xs", 256, 136, Q8K, true),
        }
    }

    /// The GGUF type id.
    pub const fn id(self) -> u32 {
        self as u32
    }

    /// The type with GGUF id `id`, if kiln handles it.
    pub fn from_id(id: u32) -> Option<Self> {
        ALL_TYPES.iter().copied().find(|t| t.id() == id)
    }

    /// ggml's name for the type.
    pub const fn name(self) -> &'static str {
        self.info().name
    }

    /// Values per block.
    pub const fn block_size(self) -> usize {
        self.info().block_size
    }

    /// Bytes per block.
    pub const fn type_size(self) -> usize {
        self.info().type_size
    }

    /// The activation type of this type's dot product.
    pub const fn vec_dot_type(self) -> GgmlType {
        self.info().vec_dot_type
    }

    /// True for the block-quantized types (everything but F32, F16, BF16).
    pub const fn is_quantized(self) -> bool {
        !matches!(self, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16)
    }

    /// Bytes of a row of `n` values, or `None` when `n` is not a multiple of the block size.
    pub const fn row_size(self, n: usize) -> Option<usize> {
        let bs = self.block_size();
        if !n.is_multiple_of(bs) {
            return None;
        }
        Some(n / bs * self.type_size())
    }

    /// Bits per weight of the format.
    pub fn bits_per_weight(self) -> f64 {
        (self.type_size() * 8) as f64 / self.block_size() as f64
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error of parsing a type name.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown tensor type `{0}` (known: f32 f16 bf16 q4_0 q4_1 q5_0 q5_1 q8_0 q8_1 q2_K q3_K q4_K q5_K q6_K q8_K iq4_nl iq4_xs)")]
pub struct UnknownType(pub String);

impl FromStr for GgmlType {
    type Err = UnknownType;
    /// Case-insensitive: `q4_k`, `Q4_K` and `q4_K` all name Q4_K.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase();
        ALL_TYPES
            .iter()
            .copied()
            .find(|t| t.name().to_ascii_lowercase() == lower)
            .ok_or_else(|| UnknownType(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_names_parse() {
        for t in ALL_TYPES {
            assert_eq!(GgmlType::from_id(t.id()), Some(t));
            assert_eq!(t.name().parse::<GgmlType>().unwrap(), t);
            assert_eq!(t.name().to_uppercase().parse::<GgmlType>().unwrap(), t);
        }
        assert!(
            GgmlType::from_id(4).is_none(),
            "id 4 (removed q4_2) is not a kiln type"
        );
        assert!("q2_XS".parse::<GgmlType>().is_err());
        assert_eq!("IQ4_XS".parse::<GgmlType>().unwrap(), GgmlType::IQ4XS);
    }

    #[test]
    fn row_sizes() {
        assert_eq!(GgmlType::Q4K.row_size(4096), Some(2304));
        assert_eq!(GgmlType::Q6K.row_size(4096), Some(3360));
        assert_eq!(GgmlType::Q8_0.row_size(4096), Some(4352));
        assert_eq!(GgmlType::Q4K.row_size(576), None);
        assert_eq!(GgmlType::F16.row_size(3), Some(6));
        assert_eq!(GgmlType::Q4K.bits_per_weight(), 4.5);
    }
}

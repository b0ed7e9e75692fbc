//! A small reader for GGUF (v2/v3) file headers: the key/value metadata and the tensor infos.
//!
//! Only the header is read; tensor data is never touched. Arrays longer than a caller-chosen
//! limit are kept as their length only (`Value::Elided`), the way `ollama show` prints `[]` for
//! `tokenizer.ggml.tokens` unless `verbose` is set.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

const MAGIC: &[u8; 4] = b"GGUF";
/// Refuse absurd lengths instead of trying to allocate them (a corrupt file).
const MAX_STRING_LEN: u64 = 64 << 20;
const MAX_COUNT: u64 = 1 << 32;

#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("reading GGUF header: {0}")]
    Io(#[from] io::Error),
    #[error("not a GGUF file (magic {0:?}, expected \"GGUF\")")]
    BadMagic([u8; 4]),
    #[error("unsupported GGUF version {0} (supported: 2, 3)")]
    BadVersion(u32),
    #[error("corrupt GGUF header: {0}")]
    Corrupt(String),
}

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
    /// An array longer than the reader's limit: only its length is kept.
    Elided(u64),
}

impl Value {
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v as u64),
            Value::U16(v) => Some(v as u64),
            Value::U32(v) => Some(v as u64),
            Value::U64(v) => Some(v),
            Value::I8(v) if v >= 0 => Some(v as u64),
            Value::I16(v) if v >= 0 => Some(v as u64),
            Value::I32(v) if v >= 0 => Some(v as u64),
            Value::I64(v) if v >= 0 => Some(v as u64),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// JSON the way Ollama's `model_info` shows it (elided arrays as `[]`).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::U8(v) => J::from(*v),
            Value::I8(v) => J::from(*v),
            Value::U16(v) => J::from(*v),
            Value::I16(v) => J::from(*v),
            Value::U32(v) => J::from(*v),
            Value::I32(v) => J::from(*v),
            Value::U64(v) => J::from(*v),
            Value::I64(v) => J::from(*v),
            Value::F32(v) => J::from(*v as f64),
            Value::F64(v) => J::from(*v),
            Value::Bool(v) => J::from(*v),
            Value::String(s) => J::from(s.as_str()),
            Value::Array(a) => J::Array(a.iter().map(Value::to_json).collect()),
            Value::Elided(_) => J::Array(Vec::new()),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    pub ggml_type: u32,
    pub offset: u64,
}

#[derive(Debug, Clone)]
pub struct Gguf {
    pub version: u32,
    /// Key/value pairs in file order.
    pub kv: Vec<(String, Value)>,
    pub tensors: Vec<TensorInfo>,
}

impl Gguf {
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.kv.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn architecture(&self) -> Option<&str> {
        self.get("general.architecture").and_then(Value::as_str)
    }

    /// `<arch>.<suffix>` as an unsigned integer.
    pub fn arch_u64(&self, suffix: &str) -> Option<u64> {
        let arch = self.architecture()?;
        self.get(&format!("{arch}.{suffix}"))
            .and_then(Value::as_u64)
    }

    /// `general.parameter_count`, or the sum over tensors of the product of their dimensions.
    pub fn parameter_count(&self) -> u64 {
        if let Some(n) = self.get("general.parameter_count").and_then(Value::as_u64) {
            return n;
        }
        self.tensors
            .iter()
            .map(|t| t.dims.iter().product::<u64>())
            .sum()
    }

    pub fn file_type(&self) -> Option<u64> {
        self.get("general.file_type").and_then(Value::as_u64)
    }

    pub fn read_path(path: &Path, max_array: usize) -> Result<Gguf, GgufError> {
        let f = File::open(path)?;
        Gguf::read(&mut BufReader::with_capacity(1 << 20, f), max_array)
    }

    /// Parse a header. Arrays with more than `max_array` elements are kept as `Value::Elided`.
    pub fn read<R: Read>(r: &mut R, max_array: usize) -> Result<Gguf, GgufError> {
        let mut magic = [0u8; 4];
        r.read_exact(&mut magic)?;
        if &magic != MAGIC {
            return Err(GgufError::BadMagic(magic));
        }
        let version = read_u32(r)?;
        if !(2..=3).contains(&version) {
            return Err(GgufError::BadVersion(version));
        }
        let n_tensors = read_u64(r)?;
        let n_kv = read_u64(r)?;
        if n_tensors > MAX_COUNT || n_kv > MAX_COUNT {
            return Err(GgufError::Corrupt(format!(
                "{n_tensors} tensors / {n_kv} keys"
            )));
        }
        let mut kv = Vec::with_capacity(n_kv.min(4096) as usize);
        for _ in 0..n_kv {
            let key = read_string(r)?;
            let ty = read_u32(r)?;
            let value = read_value(r, ty, max_array)
                .map_err(|e| annotate(e, &format!("value of key {key:?}")))?;
            kv.push((key, value));
        }
        let mut tensors = Vec::with_capacity(n_tensors.min(65536) as usize);
        for _ in 0..n_tensors {
            let name = read_string(r)?;
            let n_dims = read_u32(r)?;
            if n_dims > 8 {
                return Err(GgufError::Corrupt(format!(
                    "tensor {name:?} has {n_dims} dimensions"
                )));
            }
            let dims = (0..n_dims)
                .map(|_| read_u64(r))
                .collect::<Result<Vec<_>, _>>()?;
            let ggml_type = read_u32(r)?;
            let offset = read_u64(r)?;
            tensors.push(TensorInfo {
                name,
                dims,
                ggml_type,
                offset,
            });
        }
        Ok(Gguf {
            version,
            kv,
            tensors,
        })
    }
}

fn annotate(e: GgufError, what: &str) -> GgufError {
    match e {
        GgufError::Corrupt(m) => GgufError::Corrupt(format!("{what}: {m}")),
        other => other,
    }
}

fn read_value<R: Read>(r: &mut R, ty: u32, max_array: usize) -> Result<Value, GgufError> {
    Ok(match ty {
        0 => Value::U8(read_n::<1, _>(r)?[0]),
        1 => Value::I8(read_n::<1, _>(r)?[0] as i8),
        2 => Value::U16(u16::from_le_bytes(read_n(r)?)),
        3 => Value::I16(i16::from_le_bytes(read_n(r)?)),
        4 => Value::U32(read_u32(r)?),
        5 => Value::I32(i32::from_le_bytes(read_n(r)?)),
        6 => Value::F32(f32::from_le_bytes(read_n(r)?)),
        7 => Value::Bool(read_n::<1, _>(r)?[0] != 0),
        8 => Value::String(read_string(r)?),
        9 => {
            let elem_ty = read_u32(r)?;
            if elem_ty == 9 {
                return Err(GgufError::Corrupt("nested arrays are not supported".into()));
            }
            let n = read_u64(r)?;
            if n > MAX_COUNT {
                return Err(GgufError::Corrupt(format!("array of {n} elements")));
            }
            if n as usize > max_array {
                for _ in 0..n {
                    skip_value(r, elem_ty)?;
                }
                Value::Elided(n)
            } else {
                let mut v = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    v.push(read_value(r, elem_ty, max_array)?);
                }
                Value::Array(v)
            }
        }
        10 => Value::U64(read_u64(r)?),
        11 => Value::I64(i64::from_le_bytes(read_n(r)?)),
        12 => Value::F64(f64::from_le_bytes(read_n(r)?)),
        other => return Err(GgufError::Corrupt(format!("unknown value type {other}"))),
    })
}

fn skip_value<R: Read>(r: &mut R, ty: u32) -> Result<(), GgufError> {
    let n = match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        10..=12 => 8,
        8 => read_u64(r)?,
        other => {
            return Err(GgufError::Corrupt(format!(
                "unknown array element type {other}"
            )));
        }
    };
    if n > MAX_STRING_LEN {
        return Err(GgufError::Corrupt(format!("string of {n} bytes")));
    }
    let copied = io::copy(&mut r.take(n), &mut io::sink())?;
    if copied != n {
        return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
    }
    Ok(())
}

fn read_n<const N: usize, R: Read>(r: &mut R) -> Result<[u8; N], GgufError> {
    let mut b = [0u8; N];
    r.read_exact(&mut b)?;
    Ok(b)
}

fn read_u32<R: Read>(r: &mut R) -> Result<u32, GgufError> {
    Ok(u32::from_le_bytes(read_n(r)?))
}

fn read_u64<R: Read>(r: &mut R) -> Result<u64, GgufError> {
    Ok(u64::from_le_bytes(read_n(r)?))
}

fn read_string<R: Read>(r: &mut R) -> Result<String, GgufError> {
    let n = read_u64(r)?;
    if n > MAX_STRING_LEN {
        return Err(GgufError::Corrupt(format!("string of {n} bytes")));
    }
    let mut b = vec![0u8; n as usize];
    r.read_exact(&mut b)?;
    Ok(String::from_utf8_lossy(&b).into_owned())
}

/// llama.cpp's `llama_ftype` → the name Ollama shows as `quantization_level`.
pub fn file_type_name(ft: u64) -> &'static str {
    match ft {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        36 => "TQ1_0",
        37 => "TQ2_0",
        38 => "MXFP4",
        _ => "unknown",
    }
}

/// Ollama's `format.HumanNumber`: 134515008 → "134.52M", 8030261248 → "8.0B".
pub fn human_number(n: u64) -> String {
    const B: f64 = 1e9;
    const M: f64 = 1e6;
    const K: f64 = 1e3;
    // `x` and its unit: no decimals when whole, else `decimals` of them.
    let scaled = |x: f64, decimals: usize, unit: char| {
        let decimals = if x == x.floor() { 0 } else { decimals };
        format!("{x:.decimals$}{unit}")
    };
    let f = n as f64;
    if f >= B {
        scaled(f / B, 1, 'B')
    } else if f >= M {
        scaled(f / M, 2, 'M')
    } else if f >= K {
        format!("{:.0}K", f / K)
    } else {
        n.to_string()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds GGUF header bytes for tests.
    #[derive(Default)]
    pub struct Builder {
        kv: Vec<u8>,
        n_kv: u64,
        tensors: Vec<u8>,
        n_tensors: u64,
    }

    fn put_str(b: &mut Vec<u8>, s: &str) {
        b.extend_from_slice(&(s.len() as u64).to_le_bytes());
        b.extend_from_slice(s.as_bytes());
    }

    impl Builder {
        /// One key/value: the key, the GGUF type code `ty`, then the value as `put` writes it.
        fn entry(mut self, k: &str, ty: u32, put: impl FnOnce(&mut Vec<u8>)) -> Self {
            put_str(&mut self.kv, k);
            self.kv.extend_from_slice(&ty.to_le_bytes());
            put(&mut self.kv);
            self.n_kv += 1;
            self
        }
        pub fn kv_u32(self, k: &str, v: u32) -> Self {
            self.entry(k, 4, |b| b.extend_from_slice(&v.to_le_bytes()))
        }
        pub fn kv_f32(self, k: &str, v: f32) -> Self {
            self.entry(k, 6, |b| b.extend_from_slice(&v.to_le_bytes()))
        }
        pub fn kv_bool(self, k: &str, v: bool) -> Self {
            self.entry(k, 7, |b| b.push(v as u8))
        }
        pub fn kv_str(self, k: &str, v: &str) -> Self {
            self.entry(k, 8, |b| put_str(b, v))
        }
        /// An array: type 9, then the element type and the count.
        pub fn kv_str_array(self, k: &str, v: &[&str]) -> Self {
            self.entry(k, 9, |b| {
                b.extend_from_slice(&8u32.to_le_bytes());
                b.extend_from_slice(&(v.len() as u64).to_le_bytes());
                for s in v {
                    put_str(b, s);
                }
            })
        }
        pub fn kv_i32_array(self, k: &str, v: &[i32]) -> Self {
            self.entry(k, 9, |b| {
                b.extend_from_slice(&5u32.to_le_bytes());
                b.extend_from_slice(&(v.len() as u64).to_le_bytes());
                for x in v {
                    b.extend_from_slice(&x.to_le_bytes());
                }
            })
        }
        pub fn tensor(mut self, name: &str, dims: &[u64], ty: u32) -> Self {
            put_str(&mut self.tensors, name);
            self.tensors
                .extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for d in dims {
                self.tensors.extend_from_slice(&d.to_le_bytes());
            }
            self.tensors.extend_from_slice(&ty.to_le_bytes());
            self.tensors.extend_from_slice(&0u64.to_le_bytes());
            self.n_tensors += 1;
            self
        }
        pub fn build(self) -> Vec<u8> {
            let mut b = Vec::new();
            b.extend_from_slice(b"GGUF");
            b.extend_from_slice(&3u32.to_le_bytes());
            b.extend_from_slice(&self.n_tensors.to_le_bytes());
            b.extend_from_slice(&self.n_kv.to_le_bytes());
            b.extend_from_slice(&self.kv);
            b.extend_from_slice(&self.tensors);
            b
        }
    }

    pub fn sample() -> Vec<u8> {
        Builder::default()
            .kv_str("general.architecture", "llama")
            .kv_str("general.name", "Tiny")
            .kv_u32("general.file_type", 3)
            .kv_u32("llama.context_length", 8192)
            .kv_u32("llama.block_count", 30)
            .kv_u32("llama.embedding_length", 576)
            .kv_u32("llama.attention.head_count", 9)
            .kv_u32("llama.attention.head_count_kv", 3)
            .kv_f32("llama.attention.layer_norm_rms_epsilon", 1e-5)
            .kv_bool("tokenizer.ggml.add_bos_token", false)
            .kv_str_array("tokenizer.ggml.tokens", &["a", "b", "c", "d", "e", "f"])
            .kv_i32_array("small", &[1, -2, 3])
            .tensor("token_embd.weight", &[576, 49152], 3)
            .tensor("output_norm.weight", &[576], 0)
            .build()
    }

    #[test]
    fn reads_synthetic_header() {
        let bytes = sample();
        let g = Gguf::read(&mut bytes.as_slice(), 5).unwrap();
        assert_eq!(g.version, 3);
        assert_eq!(g.architecture(), Some("llama"));
        assert_eq!(g.arch_u64("context_length"), Some(8192));
        assert_eq!(g.arch_u64("attention.head_count_kv"), Some(3));
        assert_eq!(g.file_type(), Some(3));
        assert_eq!(
            g.get("tokenizer.ggml.add_bos_token"),
            Some(&Value::Bool(false))
        );
        assert_eq!(g.get("tokenizer.ggml.tokens"), Some(&Value::Elided(6)));
        assert_eq!(
            g.get("small"),
            Some(&Value::Array(vec![
                Value::I32(1),
                Value::I32(-2),
                Value::I32(3)
            ]))
        );
        assert_eq!(g.tensors.len(), 2);
        assert_eq!(g.tensors[0].dims, vec![576, 49152]);
        // No general.parameter_count: summed from the tensor shapes.
        assert_eq!(g.parameter_count(), 576 * 49152 + 576);
        assert_eq!(
            g.get("tokenizer.ggml.tokens").unwrap().to_json(),
            serde_json::json!([])
        );
        // With a bigger limit the array is kept.
        let g = Gguf::read(&mut bytes.as_slice(), 100).unwrap();
        match g.get("tokenizer.ggml.tokens") {
            Some(Value::Array(v)) => assert_eq!(v.len(), 6),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parameter_count_key_wins() {
        let bytes = Builder::default()
            .kv_str("general.architecture", "gemma3")
            .kv_u32("general.parameter_count", 1234)
            .tensor("x", &[10, 10], 0)
            .build();
        let g = Gguf::read(&mut bytes.as_slice(), 5).unwrap();
        assert_eq!(g.parameter_count(), 1234);
    }

    #[test]
    fn rejects_bad_magic_and_truncation() {
        let mut bytes = sample();
        bytes[0] = b'X';
        assert!(matches!(
            Gguf::read(&mut bytes.as_slice(), 5),
            Err(GgufError::BadMagic(_))
        ));
        let bytes = sample();
        let cut = &bytes[..bytes.len() - 3];
        assert!(matches!(
            Gguf::read(&mut &cut[..], 5),
            Err(GgufError::Io(_))
        ));
    }

    #[test]
    fn names() {
        assert_eq!(file_type_name(3), "Q4_1");
        assert_eq!(file_type_name(15), "Q4_K_M");
        assert_eq!(human_number(134_515_008), "134.52M");
        assert_eq!(human_number(268_098_176), "268.10M");
        assert_eq!(human_number(8_030_261_248), "8.0B");
        assert_eq!(human_number(7_000_000_000), "7B");
        assert_eq!(human_number(999), "999");
    }
}

//! The reader never panics: truncations, bit flips and hostile headers
//! give errors (or, for harmless changes, a valid model).

mod common;

use common::*;
use morsel::Model;
use morsel::runtime::ErrorKind;

#[test]
fn truncation_at_sampled_offsets_is_an_error() {
    let bytes = digits_morsel_bytes();
    let n = bytes.len();
    // every offset in the header and section table, then a stride through the rest
    let mut offsets: Vec<usize> = (0..128.min(n)).collect();
    offsets.extend((128..n).step_by(97));
    offsets.extend(n.saturating_sub(200)..n);
    for cut in offsets {
        let r = Model::from_bytes(&bytes[..cut]);
        assert!(r.is_err(), "truncated at {cut} of {n} bytes but loaded");
        assert_eq!(r.unwrap_err().kind(), ErrorKind::Format, "cut {cut}");
    }
}

#[test]
fn random_byte_flips_never_panic() {
    let bytes = digits_morsel_bytes();
    let mut seed = 0x9E3779B9u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut errors = 0;
    for _ in 0..3000 {
        let mut b = bytes.clone();
        for _ in 0..(1 + next() % 4) {
            let i = (next() as usize) % b.len();
            b[i] ^= 1 << (next() % 8);
        }
        match Model::from_bytes(&b) {
            Err(_) => errors += 1,
            Ok(m) => {
                // a flip in padding can leave a valid model: it must still run or fail cleanly
                let x = vec![0f32; 64];
                let _ = m.run(&[(
                    "x",
                    morsel::TensorRef {
                        dtype: morsel::DType::F32,
                        dims: &[1, 1, 8, 8],
                        data: bytemuck_cast(&x),
                    },
                )]);
            }
        }
    }
    assert!(
        errors > 2900,
        "only {errors} of 3000 corruptions were detected"
    );
}

fn bytemuck_cast(x: &[f32]) -> &[u8] {
    morsel::runtime::bytemuck::cast_slice(x)
}

#[test]
fn hostile_header_values_are_rejected_cleanly() {
    let good = digits_morsel_bytes();
    let fix_crc = |b: &mut Vec<u8>| {
        let crc = crc(&b[..56]);
        b[56..60].copy_from_slice(&crc.to_le_bytes());
    };
    // future major version
    let mut b = good.clone();
    b[8] = 2;
    fix_crc(&mut b);
    let e = Model::from_bytes(&b).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(e.to_string().contains("version 2"), "{e}");
    // unknown required feature
    let mut b = good.clone();
    b[16] = 0x80;
    fix_crc(&mut b);
    let e = Model::from_bytes(&b).unwrap_err();
    assert!(e.to_string().contains("features"), "{e}");
    // big-endian byte-order mark
    let mut b = good.clone();
    b[12..16].copy_from_slice(&0x0A0B0C0Du32.to_be_bytes());
    fix_crc(&mut b);
    let e = Model::from_bytes(&b).unwrap_err();
    assert!(e.to_string().contains("big-endian"), "{e}");
    // huge section count and table offset
    let mut b = good.clone();
    b[48..52].copy_from_slice(&u32::MAX.to_le_bytes());
    fix_crc(&mut b);
    assert_eq!(Model::from_bytes(&b).unwrap_err().kind(), ErrorKind::Format);
    let mut b = good.clone();
    b[40..48].copy_from_slice(&u64::MAX.to_le_bytes());
    fix_crc(&mut b);
    assert_eq!(Model::from_bytes(&b).unwrap_err().kind(), ErrorKind::Format);
    // not a morsel file at all
    assert!(Model::from_bytes(b"hello").is_err());
    assert!(Model::from_bytes(&[]).is_err());
}

/// CRC-32 (IEEE), bitwise: an independent implementation for the test.
fn crc(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

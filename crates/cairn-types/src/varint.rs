//! LEB128 unsigned varints: small numbers (lengths, timestamp deltas) take one
//! or two bytes instead of four or eight; and the length-prefixed strings
//! built on them.

/// Appends `value` as an unsigned LEB128 varint.
#[inline]
pub(crate) fn put_u64(buf: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        buf.push((value as u8) | 0x80);
        value >>= 7;
    }
    buf.push(value as u8);
}

/// Reads an unsigned LEB128 varint at `*pos`, advancing it. `None` when the
/// input ends early or the varint is longer than ten bytes.
#[inline]
pub(crate) fn get_u64(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *buf.get(*pos)?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Zigzag maps signed to unsigned so that small negative deltas stay short.
#[inline]
pub(crate) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[inline]
pub(crate) fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Appends `s` as its length (a varint) and its UTF-8 bytes.
pub(crate) fn put_str(buf: &mut Vec<u8>, s: &str) {
    put_u64(buf, s.len() as u64);
    buf.extend_from_slice(s.as_bytes());
}

/// Reads a string written by [`put_str`] at `*pos`, advancing it; the error
/// says what is wrong with the bytes.
pub(crate) fn get_str<'a>(buf: &'a [u8], pos: &mut usize) -> Result<&'a str, &'static str> {
    let len = get_u64(buf, pos).ok_or("bad string length")? as usize;
    let end = pos.checked_add(len).filter(|&e| e <= buf.len());
    let end = end.ok_or("string runs past the payload")?;
    let s = std::str::from_utf8(&buf[*pos..end]).map_err(|_| "string is not UTF-8")?;
    *pos = end;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn varint_round_trips(v in any::<u64>()) {
            let mut buf = Vec::new();
            put_u64(&mut buf, v);
            let mut pos = 0;
            prop_assert_eq!(get_u64(&buf, &mut pos), Some(v));
            prop_assert_eq!(pos, buf.len());
        }

        #[test]
        fn zigzag_round_trips(v in any::<i64>()) {
            prop_assert_eq!(unzigzag(zigzag(v)), v);
        }
    }

    #[test]
    fn truncated_varint_is_rejected() {
        let mut pos = 0;
        assert_eq!(get_u64(&[0x80, 0x80], &mut pos), None);
    }
}

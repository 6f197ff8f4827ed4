//! How the CLI writes numbers for people: counts with thousands
//! separators (the bench and the demo), and the bench's milliseconds with a
//! precision that suits their size.

/// A whole number with thousands separators: 1234567.8 → "1,234,568".
pub fn count(x: f64) -> String {
    let n = x.round().max(0.0) as u64;
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// Milliseconds with a precision that suits the size.
pub fn ms(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}ms")
    } else if x >= 10.0 {
        format!("{x:.1}ms")
    } else {
        format!("{x:.2}ms")
    }
}

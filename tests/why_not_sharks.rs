//! Why the core escrows with vsss-rs and not `sharks` 0.5 (property 2).
//!
//! sharks 0.5 draws every polynomial coefficient from 1..=255, never 0. For a
//! 2-of-n split of a byte s, share x = 1 is y = s + a with a != 0, so y != s:
//! one share rules out one value of every secret byte. Our split draws
//! coefficients uniformly from 0..=255, so y == s happens (1 time in 256),
//! and one share is consistent with every secret.
//!
//! The last test keeps sharks out of the core crate's dependency tree.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use sharks::Sharks;
use sosvault::hazmat;

/// Splits per secret value. 32 bytes x 320 = 10240 samples per secret value;
/// a value that can occur is missed with probability at most
/// (254/255)^10240 = 2^-57.9, so over 256 secrets x 256 values a false failure
/// has probability below 2^-41.9.
const SPLITS: usize = 320;

/// sharks' share 1 for `secret`, as bytes (x, then y).
fn sharks_share_1(secret: &[u8; 32]) -> Vec<u8> {
    let share = Sharks(2).dealer(secret).next().expect("a share");
    Vec::from(&share)
}

/// sharks 0.5: for every secret byte s, share 1 of a 2-of-n split never takes
/// the value s, and takes every other value. One share rules out one value.
#[test]
fn sharks_one_share_of_2_of_n_never_equals_the_secret_byte() {
    for s in 0..=255u8 {
        let mut seen = [false; 256];
        for _ in 0..SPLITS {
            let share = sharks_share_1(&[s; 32]);
            assert_eq!(share[0], 1, "x of the first share");
            for &y in &share[1..] {
                seen[y as usize] = true;
            }
        }
        assert!(!seen[s as usize], "sharks gave y == s for s = {s:#04x}");
        let missing: Vec<usize> = (0..256).filter(|&v| v != s as usize && !seen[v]).collect();
        assert!(
            missing.is_empty(),
            "s = {s:#04x}: sharks never gave {missing:?}"
        );
    }
}

/// Ours, on the same experiment: y == s occurs for every secret byte value s
/// (about 40 times in 10240 samples; never zero except with probability below
/// 2^-57.8 per value), so no value is ruled out.
#[test]
fn our_one_share_of_2_of_n_does_equal_the_secret_byte() {
    let mut total_hits = 0usize;
    for s in 0..=255u8 {
        let mut hits = 0usize;
        for _ in 0..SPLITS {
            let shares = hazmat::split_secret(&[s; 32], 2, 3).unwrap();
            assert_eq!(shares[0].index, 1);
            hits += shares[0].y.iter().filter(|&&y| y == s).count();
        }
        assert!(hits > 0, "y == s never occurred for s = {s:#04x}");
        total_hits += hits;
    }
    // 256 x 10240 samples, each y == s with probability 1/256: about 10240.
    // A uniform coefficient puts this within +-10% with overwhelming odds.
    assert!(
        (9_216..=11_264).contains(&total_hits),
        "y == s occurred {total_hits} times, expected about 10240"
    );
}

/// sharks 0.5 for t = 3: the pair of shares (y1, y2) of a byte takes only the
/// 255^2 = 65025 values with both coefficients non-zero; the 511 pairs with a
/// zero coefficient (among them (s, s)) never occur. Ours (see
/// `p2_two_shares_of_3_of_n_take_every_pair_of_values` in `properties.rs`)
/// takes all 65536. 90 000 splits give 2.88 M samples; a possible pair is
/// missed with probability (1 - 1/65025)^2.88M = 2^-63.9, so over 65025 pairs a
/// false failure has probability below 2^-47.9.
#[test]
fn sharks_two_shares_of_3_of_n_rule_out_511_pairs() {
    let s = 0x5Au8;
    let mut seen = vec![false; 1 << 16];
    for _ in 0..90_000 {
        let shares: Vec<Vec<u8>> = Sharks(3)
            .dealer(&[s; 32])
            .take(2)
            .map(|sh| Vec::from(&sh))
            .collect();
        for (a, b) in shares[0][1..].iter().zip(&shares[1][1..]) {
            seen[(*a as usize) << 8 | *b as usize] = true;
        }
    }
    assert!(!seen[(s as usize) << 8 | s as usize], "(s, s) is ruled out");
    let missing = seen.iter().filter(|v| !**v).count();
    assert_eq!(missing, 511, "pairs never seen with sharks");
}

/// sharks recovers its own secrets: the bias above is not a broken experiment.
#[test]
fn sharks_round_trip_works() {
    let secret = [0x42u8; 32];
    let shares: Vec<_> = Sharks(2).dealer(&secret).take(3).collect();
    assert_eq!(Sharks(2).recover(&shares[1..]).unwrap(), secret.to_vec());
}

/// The core crate's normal (non-dev) dependency tree has no sharks (nor its fork
/// blahaj), and does have vsss-rs.
#[test]
fn the_core_crate_does_not_depend_on_sharks() {
    let out = std::process::Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "sosvault",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8(out.stdout).unwrap();
    let crates: Vec<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(crates.contains(&"sosvault"), "tree:\n{tree}");
    assert!(crates.contains(&"vsss-rs"), "tree:\n{tree}");
    assert!(
        !crates.contains(&"sharks"),
        "sharks in the core's tree:\n{tree}"
    );
    assert!(
        !crates.contains(&"blahaj"),
        "blahaj in the core's tree:\n{tree}"
    );
}

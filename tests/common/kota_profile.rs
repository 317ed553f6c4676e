//! The student of the lifecycle example and the crypto-pipeline benchmark:
//! one realistic profile, so both seal the same kind of record.
//!
//! Included by path from `examples/lifecycle.rs` and
//! `benches/crypto_pipeline.rs`. The test vectors keep their own profile:
//! its bytes are pinned by `tests/vectors/profile.hex`.

use sosvault::Profile;

/// Asha Verma, a coaching student in a Kota hostel, every field filled in.
pub fn kota_profile() -> Profile {
    let mut p = Profile::new("Asha Verma", "+91 94140 12345");
    p.address = "12 Gandhi Nagar, Jaipur, Rajasthan".into();
    p.hostel = "Shanti Girls Hostel, room 12, Talwandi, Kota".into();
    p.institute = "Vidya Coaching Institute, Indra Vihar, Kota".into();
    p.guardian_name = "Sunita Verma (mother)".into();
    p.guardian_phone = "+91 98290 54321".into();
    p.blood_group = "B+".into();
    p.medical_notes = "Asthma (salbutamol inhaler); allergic to penicillin".into();
    p
}

//! The SMS panic: `Signed::<SmsPanic>::decode` with the round-trip hook;
//! the same input read as a received text (`sms::from_text`), whose
//! message must come back from its own text; and the control room's
//! HPKE open of whatever decodes, which may refuse and must not panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sosvault::sms::{self, SmsPanic};

fuzz_target!(|data: &[u8]| {
    sosvault_fuzz::signed::<SmsPanic>(data, sosvault_fuzz::device_key());
    let key = sosvault_fuzz::control_room_key().sms_key();
    if let Ok(panic) = sosvault::Signed::<SmsPanic>::decode(data) {
        let _ = key.open_location(&panic);
    }
    if let Ok(text) = core::str::from_utf8(data)
        && let Ok(panic) = sms::from_text(text)
    {
        let again = sms::to_text(&panic);
        assert!(again.len() <= sms::MAX_SMS_CHARS);
        assert_eq!(sms::from_text(&again).ok().as_ref(), Some(&panic));
        let _ = key.open_location(&panic);
    }
});

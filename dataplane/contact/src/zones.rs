//! The time zone of a destination from its country calling code, for
//! quiet hours. E.164 country codes are prefix-free, so the longest of the
//! 1–3 digit prefixes present in the table decides. Countries spanning
//! several hours (North America, Russia and Kazakhstan, Brazil, Mexico,
//! Australia, Indonesia, the DR Congo, Micronesia) are absent: their
//! numbers fall back to a policy's `quietHours.zones` overrides or its own
//! time zone, since guessing one zone for them would be wrong for millions.

use jiff::tz::TimeZone;
use std::collections::HashMap;
use std::sync::LazyLock;

/// (country calling code, IANA zone) of single-zone countries.
const COUNTRY_ZONES: &[(&str, &str)] = &[
    ("20", "Africa/Cairo"),
    ("211", "Africa/Juba"),
    ("212", "Africa/Casablanca"),
    ("213", "Africa/Algiers"),
    ("216", "Africa/Tunis"),
    ("218", "Africa/Tripoli"),
    ("220", "Africa/Banjul"),
    ("221", "Africa/Dakar"),
    ("222", "Africa/Nouakchott"),
    ("223", "Africa/Bamako"),
    ("224", "Africa/Conakry"),
    ("225", "Africa/Abidjan"),
    ("226", "Africa/Ouagadougou"),
    ("227", "Africa/Niamey"),
    ("228", "Africa/Lome"),
    ("229", "Africa/Porto-Novo"),
    ("230", "Indian/Mauritius"),
    ("231", "Africa/Monrovia"),
    ("232", "Africa/Freetown"),
    ("233", "Africa/Accra"),
    ("234", "Africa/Lagos"),
    ("235", "Africa/Ndjamena"),
    ("236", "Africa/Bangui"),
    ("237", "Africa/Douala"),
    ("238", "Atlantic/Cape_Verde"),
    ("239", "Africa/Sao_Tome"),
    ("240", "Africa/Malabo"),
    ("241", "Africa/Libreville"),
    ("242", "Africa/Brazzaville"),
    ("244", "Africa/Luanda"),
    ("245", "Africa/Bissau"),
    ("246", "Indian/Chagos"),
    ("248", "Indian/Mahe"),
    ("249", "Africa/Khartoum"),
    ("250", "Africa/Kigali"),
    ("251", "Africa/Addis_Ababa"),
    ("252", "Africa/Mogadishu"),
    ("253", "Africa/Djibouti"),
    ("254", "Africa/Nairobi"),
    ("255", "Africa/Dar_es_Salaam"),
    ("256", "Africa/Kampala"),
    ("257", "Africa/Bujumbura"),
    ("258", "Africa/Maputo"),
    ("260", "Africa/Lusaka"),
    ("261", "Indian/Antananarivo"),
    ("262", "Indian/Reunion"),
    ("263", "Africa/Harare"),
    ("264", "Africa/Windhoek"),
    ("265", "Africa/Blantyre"),
    ("266", "Africa/Maseru"),
    ("267", "Africa/Gaborone"),
    ("268", "Africa/Mbabane"),
    ("269", "Indian/Comoro"),
    ("27", "Africa/Johannesburg"),
    ("290", "Atlantic/St_Helena"),
    ("291", "Africa/Asmara"),
    ("297", "America/Aruba"),
    ("298", "Atlantic/Faroe"),
    ("30", "Europe/Athens"),
    ("31", "Europe/Amsterdam"),
    ("32", "Europe/Brussels"),
    ("33", "Europe/Paris"),
    ("34", "Europe/Madrid"),
    ("350", "Europe/Gibraltar"),
    ("351", "Europe/Lisbon"),
    ("352", "Europe/Luxembourg"),
    ("353", "Europe/Dublin"),
    ("354", "Atlantic/Reykjavik"),
    ("355", "Europe/Tirane"),
    ("356", "Europe/Malta"),
    ("357", "Asia/Nicosia"),
    ("358", "Europe/Helsinki"),
    ("359", "Europe/Sofia"),
    ("36", "Europe/Budapest"),
    ("370", "Europe/Vilnius"),
    ("371", "Europe/Riga"),
    ("372", "Europe/Tallinn"),
    ("373", "Europe/Chisinau"),
    ("374", "Asia/Yerevan"),
    ("375", "Europe/Minsk"),
    ("376", "Europe/Andorra"),
    ("377", "Europe/Monaco"),
    ("378", "Europe/San_Marino"),
    ("380", "Europe/Kyiv"),
    ("381", "Europe/Belgrade"),
    ("382", "Europe/Podgorica"),
    ("383", "Europe/Belgrade"),
    ("385", "Europe/Zagreb"),
    ("386", "Europe/Ljubljana"),
    ("387", "Europe/Sarajevo"),
    ("389", "Europe/Skopje"),
    ("39", "Europe/Rome"),
    ("40", "Europe/Bucharest"),
    ("41", "Europe/Zurich"),
    ("420", "Europe/Prague"),
    ("421", "Europe/Bratislava"),
    ("423", "Europe/Vaduz"),
    ("43", "Europe/Vienna"),
    ("44", "Europe/London"),
    ("45", "Europe/Copenhagen"),
    ("46", "Europe/Stockholm"),
    ("47", "Europe/Oslo"),
    ("48", "Europe/Warsaw"),
    ("49", "Europe/Berlin"),
    ("500", "Atlantic/Stanley"),
    ("501", "America/Belize"),
    ("502", "America/Guatemala"),
    ("503", "America/El_Salvador"),
    ("504", "America/Tegucigalpa"),
    ("505", "America/Managua"),
    ("506", "America/Costa_Rica"),
    ("507", "America/Panama"),
    ("508", "America/Miquelon"),
    ("509", "America/Port-au-Prince"),
    ("51", "America/Lima"),
    ("53", "America/Havana"),
    ("54", "America/Argentina/Buenos_Aires"),
    ("56", "America/Santiago"),
    ("57", "America/Bogota"),
    ("58", "America/Caracas"),
    ("590", "America/Guadeloupe"),
    ("591", "America/La_Paz"),
    ("592", "America/Guyana"),
    ("593", "America/Guayaquil"),
    ("594", "America/Cayenne"),
    ("595", "America/Asuncion"),
    ("596", "America/Martinique"),
    ("597", "America/Paramaribo"),
    ("598", "America/Montevideo"),
    ("599", "America/Curacao"),
    ("60", "Asia/Kuala_Lumpur"),
    ("63", "Asia/Manila"),
    ("64", "Pacific/Auckland"),
    ("65", "Asia/Singapore"),
    ("66", "Asia/Bangkok"),
    ("670", "Asia/Dili"),
    ("673", "Asia/Brunei"),
    ("675", "Pacific/Port_Moresby"),
    ("676", "Pacific/Tongatapu"),
    ("677", "Pacific/Guadalcanal"),
    ("678", "Pacific/Efate"),
    ("679", "Pacific/Fiji"),
    ("680", "Pacific/Palau"),
    ("685", "Pacific/Apia"),
    ("687", "Pacific/Noumea"),
    ("692", "Pacific/Majuro"),
    ("81", "Asia/Tokyo"),
    ("82", "Asia/Seoul"),
    ("84", "Asia/Ho_Chi_Minh"),
    ("850", "Asia/Pyongyang"),
    ("852", "Asia/Hong_Kong"),
    ("853", "Asia/Macau"),
    ("855", "Asia/Phnom_Penh"),
    ("856", "Asia/Vientiane"),
    ("86", "Asia/Shanghai"),
    ("880", "Asia/Dhaka"),
    ("886", "Asia/Taipei"),
    ("90", "Europe/Istanbul"),
    ("91", "Asia/Kolkata"),
    ("92", "Asia/Karachi"),
    ("93", "Asia/Kabul"),
    ("94", "Asia/Colombo"),
    ("95", "Asia/Yangon"),
    ("960", "Indian/Maldives"),
    ("961", "Asia/Beirut"),
    ("962", "Asia/Amman"),
    ("963", "Asia/Damascus"),
    ("964", "Asia/Baghdad"),
    ("965", "Asia/Kuwait"),
    ("966", "Asia/Riyadh"),
    ("967", "Asia/Aden"),
    ("968", "Asia/Muscat"),
    ("970", "Asia/Gaza"),
    ("971", "Asia/Dubai"),
    ("972", "Asia/Jerusalem"),
    ("973", "Asia/Bahrain"),
    ("974", "Asia/Qatar"),
    ("975", "Asia/Thimphu"),
    ("976", "Asia/Ulaanbaatar"),
    ("977", "Asia/Kathmandu"),
    ("98", "Asia/Tehran"),
    ("992", "Asia/Dushanbe"),
    ("993", "Asia/Ashgabat"),
    ("994", "Asia/Baku"),
    ("995", "Asia/Tbilisi"),
    ("996", "Asia/Bishkek"),
    ("998", "Asia/Tashkent"),
];

static ZONES: LazyLock<HashMap<&'static str, TimeZone>> = LazyLock::new(|| {
    COUNTRY_ZONES
        .iter()
        .filter_map(|(cc, name)| Some((*cc, TimeZone::get(name).ok()?)))
        .collect()
});

/// The time zone of the country of `e164` (digits, no `+`), when that
/// country keeps one zone.
pub fn country_zone(e164: &str) -> Option<&'static TimeZone> {
    (1..=3)
        .rev()
        .filter_map(|n| e164.get(..n))
        .find_map(|p| ZONES.get(p))
}

/// The longest of `overrides`' prefixes that starts `e164`.
pub fn longest_prefix<'a, V>(overrides: &'a [(String, V)], e164: &str) -> Option<&'a V> {
    overrides
        .iter()
        .filter(|(p, _)| e164.starts_with(p.as_str()))
        .max_by_key(|(p, _)| p.len())
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_zone_in_the_table_should_exist() {
        for (cc, name) in COUNTRY_ZONES {
            assert!(TimeZone::get(name).is_ok(), "+{cc}: unknown zone {name}");
        }
        assert_eq!(ZONES.len(), COUNTRY_ZONES.len());
    }

    #[test]
    fn country_codes_should_be_prefix_free() {
        for (a, _) in COUNTRY_ZONES {
            for (b, _) in COUNTRY_ZONES {
                assert!(a == b || !b.starts_with(a), "+{a} is a prefix of +{b}");
            }
        }
    }

    #[test]
    fn a_number_should_get_its_country_zone_and_multi_zone_countries_none() {
        let name = |n: &str| country_zone(n).and_then(|z| z.iana_name().map(str::to_owned));
        assert_eq!(name("33612345678").as_deref(), Some("Europe/Paris"));
        assert_eq!(name("819012345678").as_deref(), Some("Asia/Tokyo"));
        assert_eq!(name("35312345678").as_deref(), Some("Europe/Dublin"));
        assert_eq!(name("2348012345678").as_deref(), Some("Africa/Lagos"));
        assert_eq!(name("14155550100"), None); // North America spans zones
        assert_eq!(name("79161234567"), None); // Russia too
        assert_eq!(name(""), None);
    }

    #[test]
    fn the_longest_override_prefix_should_win() {
        let o = vec![("1".to_owned(), 1), ("1212".to_owned(), 2)];
        assert_eq!(longest_prefix(&o, "12125550100"), Some(&2));
        assert_eq!(longest_prefix(&o, "14155550100"), Some(&1));
        assert_eq!(longest_prefix(&o, "4420"), None);
    }
}

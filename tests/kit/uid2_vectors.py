"""UID2 normalisation and hash examples, as published by IABTechLab (uid2docs, uid2-operator,
uid2-client-python/-java, uid2-web-integrations, uid2-android-sdk, uid2-ios-sdk); gathered with
the search tool, every hash recomputed. Sources are named per entry."""

# ruff: noqa: E501

# (raw, normalized, sha256_hex_or_None, base64_or_None, source)
EMAIL_VALID = [
    (
        "TEst.TEST@Test.com ",
        "test.test@test.com",
        None,
        "dvECjPKZHya0/SIhSGwP0m8SgTv1vzLxPULUOsm880M=",
        "uid2-operator InputNormalizationTest.java; uid2-client-python tests/test_normalization.py; uid2-android-sdk InputUtilsTest.kt; uid2-ios-sdk IdentityTypeTests.swift; uid2-web-integrations diiNormalization.test.ts -- base64 from operator+python tests (the other listed repos assert the normalized value only); listed 3x in operator/python/android/ios/web lists",
    ),
    (
        "test.test@test.com",
        "test.test@test.com",
        None,
        "dvECjPKZHya0/SIhSGwP0m8SgTv1vzLxPULUOsm880M=",
        "uid2-operator InputNormalizationTest.java; uid2-client-python tests/test_normalization.py; uid2-android-sdk InputUtilsTest.kt; uid2-ios-sdk IdentityTypeTests.swift; uid2-web-integrations diiNormalization.test.ts -- base64 from operator+python tests (the other listed repos assert the normalized value only)",
    ),
    (
        "test.test@gmail.com",
        "testtest@gmail.com",
        None,
        "LkLfFrut8Tc3h/fIvYDiBKSbaMiau/DtaLBPQYszdMw=",
        "uid2-operator InputNormalizationTest.java; uid2-client-python tests/test_normalization.py; uid2-android-sdk InputUtilsTest.kt; uid2-ios-sdk IdentityTypeTests.swift; uid2-web-integrations diiNormalization.test.ts -- base64 from operator+python tests (the other listed repos assert the normalized value only)",
    ),
    (
        "test+test@test.com",
        "test+test@test.com",
        None,
        "rQ4yzdOz4uG8N54326QyZD6/JwqrXn4lmy34cVCojB8=",
        "uid2-operator InputNormalizationTest.java; uid2-client-python tests/test_normalization.py; uid2-android-sdk InputUtilsTest.kt; uid2-ios-sdk IdentityTypeTests.swift; uid2-web-integrations diiNormalization.test.ts -- base64 from operator+python tests (the other listed repos assert the normalized value only)",
    ),
    (
        "+test@test.com",
        "+test@test.com",
        None,
        "weFizOVVWKlLfyorbBU8oxYDv4HJtTZCPMyZ4THzUQE=",
        "uid2-operator InputNormalizationTest.java; uid2-client-python tests/test_normalization.py; uid2-android-sdk InputUtilsTest.kt; uid2-ios-sdk IdentityTypeTests.swift; uid2-web-integrations diiNormalization.test.ts -- base64 from operator+python tests (the other listed repos assert the normalized value only)",
    ),
    (
        "test+test@gmail.com",
        "test@gmail.com",
        None,
        "h5JGBrQTGorO7q6IaFMfu5cSqqB6XTp1aybOD11spnQ=",
        "uid2-operator InputNormalizationTest.java; uid2-client-python tests/test_normalization.py; uid2-android-sdk InputUtilsTest.kt; uid2-ios-sdk IdentityTypeTests.swift; uid2-web-integrations diiNormalization.test.ts -- base64 from operator+python tests (the other listed repos assert the normalized value only)",
    ),
    (
        "testtest@test.com",
        "testtest@test.com",
        None,
        "d1Lr/s4GLLX3SvQVMoQdIMfbQPMAGZYry+2V+0pZlQg=",
        "uid2-operator InputNormalizationTest.java; uid2-client-python tests/test_normalization.py; uid2-android-sdk InputUtilsTest.kt; uid2-ios-sdk IdentityTypeTests.swift; uid2-web-integrations diiNormalization.test.ts -- base64 from operator+python tests (the other listed repos assert the normalized value only)",
    ),
    (
        " testtest@test.com",
        "testtest@test.com",
        None,
        "d1Lr/s4GLLX3SvQVMoQdIMfbQPMAGZYry+2V+0pZlQg=",
        "uid2-operator InputNormalizationTest.java; uid2-client-python tests/test_normalization.py; uid2-android-sdk InputUtilsTest.kt; uid2-ios-sdk IdentityTypeTests.swift; uid2-web-integrations diiNormalization.test.ts -- base64 from operator+python tests (the other listed repos assert the normalized value only)",
    ),
    (
        "testtest@test.com ",
        "testtest@test.com",
        None,
        "d1Lr/s4GLLX3SvQVMoQdIMfbQPMAGZYry+2V+0pZlQg=",
        "uid2-operator InputNormalizationTest.java; uid2-client-python tests/test_normalization.py; uid2-android-sdk InputUtilsTest.kt; uid2-ios-sdk IdentityTypeTests.swift; uid2-web-integrations diiNormalization.test.ts -- base64 from operator+python tests (the other listed repos assert the normalized value only)",
    ),
    (
        " testtest@test.com ",
        "testtest@test.com",
        None,
        "d1Lr/s4GLLX3SvQVMoQdIMfbQPMAGZYry+2V+0pZlQg=",
        "uid2-operator InputNormalizationTest.java; uid2-client-python tests/test_normalization.py; uid2-android-sdk InputUtilsTest.kt; uid2-ios-sdk IdentityTypeTests.swift; uid2-web-integrations diiNormalization.test.ts -- base64 from operator+python tests (the other listed repos assert the normalized value only)",
    ),
    (
        "  testtest@test.com  ",
        "testtest@test.com",
        None,
        "d1Lr/s4GLLX3SvQVMoQdIMfbQPMAGZYry+2V+0pZlQg=",
        "uid2-operator InputNormalizationTest.java; uid2-client-python tests/test_normalization.py; uid2-android-sdk InputUtilsTest.kt; uid2-ios-sdk IdentityTypeTests.swift; uid2-web-integrations diiNormalization.test.ts -- base64 from operator+python tests (the other listed repos assert the normalized value only)",
    ),
    (
        " test.test@gmail.com",
        "testtest@gmail.com",
        None,
        "LkLfFrut8Tc3h/fIvYDiBKSbaMiau/DtaLBPQYszdMw=",
        "uid2-operator InputNormalizationTest.java; uid2-client-python tests/test_normalization.py; uid2-android-sdk InputUtilsTest.kt; uid2-ios-sdk IdentityTypeTests.swift; uid2-web-integrations diiNormalization.test.ts -- base64 from operator+python tests (the other listed repos assert the normalized value only)",
    ),
    (
        "test.test@gmail.com ",
        "testtest@gmail.com",
        None,
        "LkLfFrut8Tc3h/fIvYDiBKSbaMiau/DtaLBPQYszdMw=",
        "uid2-operator InputNormalizationTest.java; uid2-client-python tests/test_normalization.py; uid2-android-sdk InputUtilsTest.kt; uid2-ios-sdk IdentityTypeTests.swift; uid2-web-integrations diiNormalization.test.ts -- base64 from operator+python tests (the other listed repos assert the normalized value only)",
    ),
    (
        " test.test@gmail.com ",
        "testtest@gmail.com",
        None,
        "LkLfFrut8Tc3h/fIvYDiBKSbaMiau/DtaLBPQYszdMw=",
        "uid2-operator InputNormalizationTest.java; uid2-client-python tests/test_normalization.py; uid2-android-sdk InputUtilsTest.kt; uid2-ios-sdk IdentityTypeTests.swift; uid2-web-integrations diiNormalization.test.ts -- base64 from operator+python tests (the other listed repos assert the normalized value only)",
    ),
    (
        "  test.test@gmail.com  ",
        "testtest@gmail.com",
        None,
        "LkLfFrut8Tc3h/fIvYDiBKSbaMiau/DtaLBPQYszdMw=",
        "uid2-operator InputNormalizationTest.java; uid2-client-python tests/test_normalization.py; uid2-android-sdk InputUtilsTest.kt; uid2-ios-sdk IdentityTypeTests.swift; uid2-web-integrations diiNormalization.test.ts -- base64 from operator+python tests (the other listed repos assert the normalized value only)",
    ),
    (
        "TEstTEst@gmail.com  ",
        "testtest@gmail.com",
        None,
        "LkLfFrut8Tc3h/fIvYDiBKSbaMiau/DtaLBPQYszdMw=",
        "uid2-operator InputNormalizationTest.java; uid2-client-python tests/test_normalization.py; uid2-android-sdk InputUtilsTest.kt; uid2-ios-sdk IdentityTypeTests.swift; uid2-web-integrations diiNormalization.test.ts -- base64 from operator+python tests (the other listed repos assert the normalized value only)",
    ),
    (
        "TEstTEst@GMail.Com  ",
        "testtest@gmail.com",
        None,
        "LkLfFrut8Tc3h/fIvYDiBKSbaMiau/DtaLBPQYszdMw=",
        "uid2-operator InputNormalizationTest.java; uid2-client-python tests/test_normalization.py; uid2-android-sdk InputUtilsTest.kt; uid2-ios-sdk IdentityTypeTests.swift; uid2-web-integrations diiNormalization.test.ts -- base64 from operator+python tests (the other listed repos assert the normalized value only)",
    ),
    (
        " TEstTEst@GMail.Com  ",
        "testtest@gmail.com",
        None,
        "LkLfFrut8Tc3h/fIvYDiBKSbaMiau/DtaLBPQYszdMw=",
        "uid2-operator InputNormalizationTest.java; uid2-client-python tests/test_normalization.py; uid2-android-sdk InputUtilsTest.kt; uid2-ios-sdk IdentityTypeTests.swift; uid2-web-integrations diiNormalization.test.ts -- base64 from operator+python tests (the other listed repos assert the normalized value only)",
    ),
    (
        "TEstTEst@GMail.Com",
        "testtest@gmail.com",
        None,
        "LkLfFrut8Tc3h/fIvYDiBKSbaMiau/DtaLBPQYszdMw=",
        "uid2-operator InputNormalizationTest.java; uid2-client-python tests/test_normalization.py; uid2-android-sdk InputUtilsTest.kt; uid2-ios-sdk IdentityTypeTests.swift; uid2-web-integrations diiNormalization.test.ts -- base64 from operator+python tests (the other listed repos assert the normalized value only)",
    ),
    (
        "TEst.TEst@GMail.Com",
        "testtest@gmail.com",
        None,
        "LkLfFrut8Tc3h/fIvYDiBKSbaMiau/DtaLBPQYszdMw=",
        "uid2-operator InputNormalizationTest.java; uid2-client-python tests/test_normalization.py; uid2-android-sdk InputUtilsTest.kt; uid2-ios-sdk IdentityTypeTests.swift -- base64 from operator+python tests (the other listed repos assert the normalized value only)",
    ),
    (
        "TEst.TEst+123@GMail.Com",
        "testtest@gmail.com",
        None,
        "LkLfFrut8Tc3h/fIvYDiBKSbaMiau/DtaLBPQYszdMw=",
        "uid2-operator InputNormalizationTest.java; uid2-client-python tests/test_normalization.py; uid2-android-sdk InputUtilsTest.kt; uid2-ios-sdk IdentityTypeTests.swift; uid2-web-integrations diiNormalization.test.ts -- base64 from operator+python tests (the other listed repos assert the normalized value only)",
    ),
    (
        "\U0001f60atesttest@test.com",
        "\U0001f60atesttest@test.com",
        None,
        "fAFEUqApQ0V/M9mLj/IO54CgKgtQuARKsOMqtFklD4k=",
        "uid2-operator InputNormalizationTest.java; uid2-client-python tests/test_normalization.py; uid2-android-sdk InputUtilsTest.kt; uid2-web-integrations diiNormalization.test.ts -- base64 from operator+python tests (the other listed repos assert the normalized value only)",
    ),
    (
        "testtest@\U0001f60atest.com",
        "testtest@\U0001f60atest.com",
        None,
        "tcng5pttf7Y2z4ylZTROvIMw1+IVrMpR4D1KeXSrdiM=",
        "uid2-operator InputNormalizationTest.java; uid2-client-python tests/test_normalization.py; uid2-android-sdk InputUtilsTest.kt; uid2-web-integrations diiNormalization.test.ts -- base64 from operator+python tests (the other listed repos assert the normalized value only)",
    ),
    (
        "testtest@test.com\U0001f60a",
        "testtest@test.com\U0001f60a",
        None,
        "0qI21FPLkuez/8RswfmircHPYz9Dtf7/Nch1rSWEQf0=",
        "uid2-operator InputNormalizationTest.java; uid2-client-python tests/test_normalization.py; uid2-android-sdk InputUtilsTest.kt; uid2-web-integrations diiNormalization.test.ts -- base64 from operator+python tests (the other listed repos assert the normalized value only)",
    ),
    (
        "USER@example.com",
        "user@example.com",
        "b4c9a289323b21a01c3e940f150eb9b8c542587f1abfd8f0e1cc1ffc5e475514",
        "tMmiiTI7IaAcPpQPFQ65uMVCWH8av9jw4cwf/F5HVRQ=",
        "IABTechLab/uid2docs docs/getting-started/gs-normalization-encoding.md ('Email Address Hash Encoding' table; the 'Raw email address USER@example.com' row appears in one stored version (HTML-table layout), others show only the normalized row)",
    ),
    (
        "user@example.com",
        "user@example.com",
        "b4c9a289323b21a01c3e940f150eb9b8c542587f1abfd8f0e1cc1ffc5e475514",
        "tMmiiTI7IaAcPpQPFQ65uMVCWH8av9jw4cwf/F5HVRQ=",
        "IABTechLab/uid2docs docs/getting-started/gs-normalization-encoding.md ('Email Address Hash Encoding' table)",
    ),
    (
        "JANESaoirse@gmail.com",
        "janesaoirse@gmail.com",
        "92ee26057ed9dea2535d6c8b141d48373932476599196e00352254896db5888f",
        "ku4mBX7Z3qJTXWyLFB1INzkyR2WZGW4ANSJUiW21iI8=",
        "IABTechLab/uid2docs docs/getting-started/gs-normalization-encoding.md (Introduction 'important' box; hex from the examples table)",
    ),
    (
        "MyEmail@example.com",
        "myemail@example.com",
        "16c18d336f0b250f0e2d907452ceb9658a74ecdae8bc94864c23122a72cc27a5",
        "FsGNM28LJQ8OLZB0Us65ZYp07NrovJSGTCMSKnLMJ6U=",
        "IABTechLab/uid2docs docs/getting-started/gs-normalization-encoding.md ('Normalization Examples for Email'); also IABTechLab/uid2-client-java src/test/java/com/uid2/client/InputUtilTests.java, IABTechLab/uid2-ios-sdk Tests/UID2Tests/IdentityTypeTests.swift",
    ),
    (
        "MYEMAIL@example.com",
        "myemail@example.com",
        "16c18d336f0b250f0e2d907452ceb9658a74ecdae8bc94864c23122a72cc27a5",
        "FsGNM28LJQ8OLZB0Us65ZYp07NrovJSGTCMSKnLMJ6U=",
        "IABTechLab/uid2docs docs/getting-started/gs-normalization-encoding.md ('Normalization Examples for Email'); also IABTechLab/uid2-client-java src/test/java/com/uid2/client/InputUtilTests.java, IABTechLab/uid2-ios-sdk Tests/UID2Tests/IdentityTypeTests.swift",
    ),
    (
        "My.Email@example.com",
        "my.email@example.com",
        "e22b53bc6f871274f3a62ab37a3caed7214fc14d676215a96a242fcfada1c81f",
        "4itTvG+HEnTzpiqzejyu1yFPwU1nYhWpaiQvz62hyB8=",
        "IABTechLab/uid2docs docs/getting-started/gs-normalization-encoding.md ('Normalization Examples for Email'); also IABTechLab/uid2-ios-sdk Tests/UID2Tests/IdentityTypeTests.swift",
    ),
    (
        "JANESAOIRSE@example.com",
        "janesaoirse@example.com",
        "d6670e7a92007f1b5ff785f1fc81e53aa6d3d7bd06bdf5c473cdc7286c284b6d",
        "1mcOepIAfxtf94Xx/IHlOqbT170GvfXEc83HKGwoS20=",
        "IABTechLab/uid2docs docs/getting-started/gs-normalization-encoding.md; also IABTechLab/uid2-client-java src/test/java/com/uid2/client/InputUtilTests.java, IABTechLab/uid2-ios-sdk Tests/UID2Tests/IdentityTypeTests.swift",
    ),
    (
        "JaneSaoirse@example.com",
        "janesaoirse@example.com",
        "d6670e7a92007f1b5ff785f1fc81e53aa6d3d7bd06bdf5c473cdc7286c284b6d",
        "1mcOepIAfxtf94Xx/IHlOqbT170GvfXEc83HKGwoS20=",
        "IABTechLab/uid2docs docs/getting-started/gs-normalization-encoding.md; also IABTechLab/uid2-client-java src/test/java/com/uid2/client/InputUtilTests.java, IABTechLab/uid2-ios-sdk Tests/UID2Tests/IdentityTypeTests.swift",
    ),
    (
        "jane.saoirse@example.com",
        "jane.saoirse@example.com",
        "b196432c7b989a2ca91c83799957c515da53e6c13abf20b78fea94f117e90bf8",
        "sZZDLHuYmiypHIN5mVfFFdpT5sE6vyC3j+qU8RfpC/g=",
        "IABTechLab/uid2docs docs/getting-started/gs-normalization-encoding.md (markdown-table version has a stray TAB before the hex inside the backticks: '`\\tb196...`'; HTML-table version is clean); also IABTechLab/uid2-ios-sdk Tests/UID2Tests/IdentityTypeTests.swift",
    ),
    (
        "Jane.Saoirse@example.com",
        "jane.saoirse@example.com",
        "b196432c7b989a2ca91c83799957c515da53e6c13abf20b78fea94f117e90bf8",
        "sZZDLHuYmiypHIN5mVfFFdpT5sE6vyC3j+qU8RfpC/g=",
        "IABTechLab/uid2docs docs/getting-started/gs-normalization-encoding.md; also IABTechLab/uid2-ios-sdk Tests/UID2Tests/IdentityTypeTests.swift",
    ),
    (
        "JaneSaoirse+Work@example.com",
        "janesaoirse+work@example.com",
        "28aaee4815230cd3b4ebd88c515226550666e91ac019929e3adac3f66c288180",
        "KKruSBUjDNO069iMUVImVQZm6RrAGZKeOtrD9mwogYA=",
        "IABTechLab/uid2docs docs/getting-started/gs-normalization-encoding.md; also IABTechLab/uid2-ios-sdk Tests/UID2Tests/IdentityTypeTests.swift",
    ),
    (
        "JANE.SAOIRSE@gmail.com",
        "janesaoirse@gmail.com",
        "92ee26057ed9dea2535d6c8b141d48373932476599196e00352254896db5888f",
        "ku4mBX7Z3qJTXWyLFB1INzkyR2WZGW4ANSJUiW21iI8=",
        "IABTechLab/uid2docs docs/getting-started/gs-normalization-encoding.md; also IABTechLab/uid2-client-java src/test/java/com/uid2/client/InputUtilTests.java, IABTechLab/uid2-ios-sdk Tests/UID2Tests/IdentityTypeTests.swift",
    ),
    (
        "Jane.Saoirse@gmail.com",
        "janesaoirse@gmail.com",
        "92ee26057ed9dea2535d6c8b141d48373932476599196e00352254896db5888f",
        "ku4mBX7Z3qJTXWyLFB1INzkyR2WZGW4ANSJUiW21iI8=",
        "IABTechLab/uid2docs docs/getting-started/gs-normalization-encoding.md; also IABTechLab/uid2-client-java src/test/java/com/uid2/client/InputUtilTests.java, IABTechLab/uid2-ios-sdk Tests/UID2Tests/IdentityTypeTests.swift",
    ),
    (
        "JaneSaoirse+Work@gmail.com",
        "janesaoirse@gmail.com",
        "92ee26057ed9dea2535d6c8b141d48373932476599196e00352254896db5888f",
        "ku4mBX7Z3qJTXWyLFB1INzkyR2WZGW4ANSJUiW21iI8=",
        "IABTechLab/uid2docs docs/getting-started/gs-normalization-encoding.md; also IABTechLab/uid2-ios-sdk Tests/UID2Tests/IdentityTypeTests.swift",
    ),
    (
        "JaneSaoirse+UID2@example.com",
        "janesaoirse+uid2@example.com",
        "6e143668c206593d5ecb8a7b2726af74d948438a5ed75febadcbf4bb58ebc427",
        "bhQ2aMIGWT1ey4p7JyavdNlIQ4pe11/rrcv0u1jrxCc=",
        "IABTechLab/uid2-client-java src/test/java/com/uid2/client/InputUtilTests.java (base64); hex+normalized from IABTechLab/uid2docs i18n/ja/docusaurus-plugin-content-docs/current/getting-started/gs-normalization-encoding.md (older stored version)",
    ),
    (
        "JaneSaoirse+UID2@gmail.com",
        "janesaoirse@gmail.com",
        "92ee26057ed9dea2535d6c8b141d48373932476599196e00352254896db5888f",
        "ku4mBX7Z3qJTXWyLFB1INzkyR2WZGW4ANSJUiW21iI8=",
        "IABTechLab/uid2-client-java src/test/java/com/uid2/client/InputUtilTests.java (base64); also IABTechLab/uid2docs i18n/ja/docusaurus-plugin-content-docs/current/getting-started/gs-normalization-encoding.md (older stored version)",
    ),
    (
        "janesaoirse@gmail.com",
        "janesaoirse@gmail.com",
        "92ee26057ed9dea2535d6c8b141d48373932476599196e00352254896db5888f",
        "ku4mBX7Z3qJTXWyLFB1INzkyR2WZGW4ANSJUiW21iI8=",
        "IABTechLab/uid2-client-java src/test/java/com/uid2/client/InputUtilTests.java (base64); IABTechLab/uid2-ios-sdk Tests/UID2Tests/ClientGeneratePayloadTests.swift (base64); hex from IABTechLab/uid2docs docs/getting-started/gs-normalization-encoding.md",
    ),
    (
        "myemail@example.com",
        "myemail@example.com",
        "16c18d336f0b250f0e2d907452ceb9658a74ecdae8bc94864c23122a72cc27a5",
        "FsGNM28LJQ8OLZB0Us65ZYp07NrovJSGTCMSKnLMJ6U=",
        "IABTechLab/uid2-ios-sdk Tests/UID2Tests/IdentityTypeTests.swift (identity case); base64 also in IABTechLab/uid2-ios-sdk Tests/UID2Tests/ClientGeneratePayloadTests.swift; hex from IABTechLab/uid2docs docs/getting-started/gs-normalization-encoding.md",
    ),
    (
        "JaneSaoirse+@gmail.com",
        "janesaoirse@gmail.com",
        "92ee26057ed9dea2535d6c8b141d48373932476599196e00352254896db5888f",
        "ku4mBX7Z3qJTXWyLFB1INzkyR2WZGW4ANSJUiW21iI8=",
        "IABTechLab/uid2-ios-sdk Tests/UID2Tests/IdentityTypeTests.swift ('Edge cases'; normalized value asserted there; hashes from IABTechLab/uid2docs docs/getting-started/gs-normalization-encoding.md)",
    ),
    (
        "JaneSaoirse++@gmail.com",
        "janesaoirse@gmail.com",
        "92ee26057ed9dea2535d6c8b141d48373932476599196e00352254896db5888f",
        "ku4mBX7Z3qJTXWyLFB1INzkyR2WZGW4ANSJUiW21iI8=",
        "IABTechLab/uid2-ios-sdk Tests/UID2Tests/IdentityTypeTests.swift ('Edge cases'; normalized value asserted there; hashes from IABTechLab/uid2docs docs/getting-started/gs-normalization-encoding.md)",
    ),
    (
        "JaneSaoirse+Work+more.work@gmail.com",
        "janesaoirse@gmail.com",
        "92ee26057ed9dea2535d6c8b141d48373932476599196e00352254896db5888f",
        "ku4mBX7Z3qJTXWyLFB1INzkyR2WZGW4ANSJUiW21iI8=",
        "IABTechLab/uid2-ios-sdk Tests/UID2Tests/IdentityTypeTests.swift ('Edge cases'; normalized value asserted there; hashes from IABTechLab/uid2docs docs/getting-started/gs-normalization-encoding.md)",
    ),
    (
        "Jane.Saoirse+Work@gmail.com",
        "janesaoirse@gmail.com",
        "92ee26057ed9dea2535d6c8b141d48373932476599196e00352254896db5888f",
        "ku4mBX7Z3qJTXWyLFB1INzkyR2WZGW4ANSJUiW21iI8=",
        "IABTechLab/uid2-ios-sdk Tests/UID2Tests/IdentityTypeTests.swift ('Edge cases'; normalized value asserted there; hashes from IABTechLab/uid2docs docs/getting-started/gs-normalization-encoding.md)",
    ),
    (
        "validate@example.com",
        "validate@example.com",
        None,
        "ntI244ZRTXwAwpki6/M5cyBYW7h/Wq576lnN3l9+W/c=",
        "IABTechLab/uid2docs docs/endpoints/post-token-validate.md ('The only valid value is' table)",
    ),
    (
        "user2@example.com",
        "user2@example.com",
        None,
        "KzsrnOhCq4tqbGFMsflgS7ig1QLRr0nFJrcrEIlOlbU=",
        "IABTechLab/uid2docs docs/endpoints/post-identity-map.md (v2/v3 request examples) -- pairing IMPLIED by parallel order of the 'email' and 'email_hash' example arrays, not stated explicitly",
    ),
    (
        "foo@bar.com",
        "foo@bar.com",
        "0c7e6a405862e402eb76a70f8a26fc732d07c32931e9fae9ab1582911d2e8a3b",
        "DH5qQFhi5ALrdqcPiib8cy0Hwykx6frpqxWCkR0uijs=",
        "IABTechLab/uid2-operator src/test/java/com/uid2/operator/service/InputNormalizationTest.java (identical list in older src/test/java/com/uid2/operator/InputNormalizationTest.java) testValidHashNormalization (comment: 'These hashes are SHA256 of foo@bar.com'; hex also given in upper case)",
    ),
]

# (raw, source) -- every implementation returns null/None/undefined/throws
EMAIL_INVALID = [
    (
        "",
        "uid2-operator InputNormalizationTest.java; uid2-client-python tests/test_normalization.py; uid2-android-sdk InputUtilsTest.kt; uid2-ios-sdk IdentityTypeTests.swift; uid2-web-integrations diiNormalization.test.ts",
    ),
    (
        " @",
        "uid2-operator InputNormalizationTest.java; uid2-client-python tests/test_normalization.py; uid2-android-sdk InputUtilsTest.kt; uid2-ios-sdk IdentityTypeTests.swift; uid2-web-integrations diiNormalization.test.ts",
    ),
    (
        "@",
        "uid2-operator InputNormalizationTest.java; uid2-client-python tests/test_normalization.py; uid2-android-sdk InputUtilsTest.kt; uid2-ios-sdk IdentityTypeTests.swift; uid2-web-integrations diiNormalization.test.ts",
    ),
    (
        "a@",
        "uid2-operator InputNormalizationTest.java; uid2-client-python tests/test_normalization.py; uid2-android-sdk InputUtilsTest.kt; uid2-ios-sdk IdentityTypeTests.swift; uid2-web-integrations diiNormalization.test.ts",
    ),
    (
        "@b",
        "uid2-operator InputNormalizationTest.java; uid2-client-python tests/test_normalization.py; uid2-android-sdk InputUtilsTest.kt; uid2-ios-sdk IdentityTypeTests.swift; uid2-web-integrations diiNormalization.test.ts",
    ),
    (
        "@b.com",
        "uid2-operator InputNormalizationTest.java; uid2-client-python tests/test_normalization.py; uid2-android-sdk InputUtilsTest.kt; uid2-ios-sdk IdentityTypeTests.swift; uid2-web-integrations diiNormalization.test.ts",
    ),
    (
        "+",
        "uid2-operator InputNormalizationTest.java; uid2-client-python tests/test_normalization.py; uid2-android-sdk InputUtilsTest.kt; uid2-ios-sdk IdentityTypeTests.swift; uid2-web-integrations diiNormalization.test.ts",
    ),
    (
        " ",
        "uid2-operator InputNormalizationTest.java; uid2-client-python tests/test_normalization.py; uid2-android-sdk InputUtilsTest.kt; uid2-ios-sdk IdentityTypeTests.swift; uid2-web-integrations diiNormalization.test.ts",
    ),
    (
        "+@gmail.com",
        "uid2-operator InputNormalizationTest.java; uid2-client-python tests/test_normalization.py; uid2-android-sdk InputUtilsTest.kt; uid2-ios-sdk IdentityTypeTests.swift; uid2-web-integrations diiNormalization.test.ts",
    ),
    (
        ".+@gmail.com",
        "uid2-operator InputNormalizationTest.java; uid2-client-python tests/test_normalization.py; uid2-android-sdk InputUtilsTest.kt; uid2-ios-sdk IdentityTypeTests.swift; uid2-web-integrations diiNormalization.test.ts",
    ),
    (
        "a@ba@z.com",
        "uid2-operator InputNormalizationTest.java; uid2-client-python tests/test_normalization.py; uid2-android-sdk InputUtilsTest.kt; uid2-ios-sdk IdentityTypeTests.swift; uid2-web-integrations diiNormalization.test.ts",
    ),
]

# (raw, js_sdk_result, java_python_operator_result, note) -- implementations DISAGREE; only the JS SDK has a published test
EMAIL_IMPLEMENTATION_DIVERGENT = [
    (
        "test test@test.com",
        None,
        "test test@test.com",
        "IABTechLab/uid2-web-integrations src/shared/unitTests/diiNormalization.test.ts (same lists in src/unitTests/ and src/integrationTests/diiNormalization.test.ts) asserts undefined (invalid); Java/Python/Android/iOS/operator code returns the string with the inner space kept (no published test)",
    ),
    (
        "test@te st.com",
        None,
        "test@te st.com",
        "IABTechLab/uid2-web-integrations src/shared/unitTests/diiNormalization.test.ts (same lists in src/unitTests/ and src/integrationTests/diiNormalization.test.ts) asserts undefined; Java-family code keeps inner domain space",
    ),
    (
        "test test@gmail.com",
        None,
        "test test@gmail.com",
        "IABTechLab/uid2-web-integrations src/shared/unitTests/diiNormalization.test.ts (same lists in src/unitTests/ and src/integrationTests/diiNormalization.test.ts) asserts undefined; Java-family code keeps the space (space is not '.' or '+', so it survives the gmail rule)",
    ),
]

# (raw, normalized_as_published, hex, base64, source, note) -- published in an OLD doc version, contradicts current docs + code. Hashes are correct for the string shown.
EMAIL_SUPERSEDED_DOC_EXAMPLES = [
    (
        "My.Email@example.com",
        "myemail@example.com",
        "16c18d336f0b250f0e2d907452ceb9658a74ecdae8bc94864c23122a72cc27a5",
        "FsGNM28LJQ8OLZB0Us65ZYp07NrovJSGTCMSKnLMJ6U=",
        "IABTechLab/uid2docs i18n/ja/docusaurus-plugin-content-docs/current/getting-started/gs-normalization-encoding.md (older stored version)",
        "CONFLICTS with current docs and all code (dots only removed for gmail.com): current docs give my.email@example.com / 4itTvG+...",
    ),
    (
        "Jane.Saoirse@example.com",
        "janesaoirse@example.com",
        "d6670e7a92007f1b5ff785f1fc81e53aa6d3d7bd06bdf5c473cdc7286c284b6d",
        "1mcOepIAfxtf94Xx/IHlOqbT170GvfXEc83HKGwoS20=",
        "IABTechLab/uid2docs i18n/ja/docusaurus-plugin-content-docs/current/getting-started/gs-normalization-encoding.md (older stored version)",
        "CONFLICTS with current docs and code: should be jane.saoirse@example.com / sZZDLHu...",
    ),
]

# (raw, sha256_hex_or_None, base64_or_None, source) -- raw is already normalized; UID2 does not normalize phones
PHONE_VALID = [
    (
        "+1234567890",
        None,
        None,
        "uid2-operator InputNormalizationTest.java; uid2-client-python tests/test_normalization.py; uid2-android-sdk InputUtilsTest.kt; uid2-ios-sdk IdentityTypeTests.swift; uid2-web-integrations diiNormalization.test.ts",
    ),
    (
        "+12345678901",
        "10e6f0b47054a83359477dcb35231db6de5c69fb1816e1a6b98e192de9e5b9ee",
        "EObwtHBUqDNZR33LNSMdtt5cafsYFuGmuY4ZLenlue4=",
        "uid2-operator InputNormalizationTest.java; uid2-client-python tests/test_normalization.py; uid2-android-sdk InputUtilsTest.kt; uid2-ios-sdk IdentityTypeTests.swift; uid2-web-integrations diiNormalization.test.ts; hashes: IABTechLab/uid2docs docs/getting-started/gs-normalization-encoding.md ('Phone Number Hash Encoding'), IABTechLab/uid2docs docs/endpoints/post-token-validate.md, IABTechLab/uid2docs docs/endpoints/post-identity-map.md (v2/v3 request examples), IABTechLab/uid2-ios-sdk Tests/UID2Tests/ClientGeneratePayloadTests.swift",
    ),
    (
        "+123456789012",
        None,
        None,
        "uid2-operator InputNormalizationTest.java; uid2-client-python tests/test_normalization.py; uid2-android-sdk InputUtilsTest.kt; uid2-ios-sdk IdentityTypeTests.swift; uid2-web-integrations diiNormalization.test.ts",
    ),
    (
        "+1234567890123",
        None,
        None,
        "uid2-operator InputNormalizationTest.java; uid2-client-python tests/test_normalization.py; uid2-android-sdk InputUtilsTest.kt; uid2-ios-sdk IdentityTypeTests.swift; uid2-web-integrations diiNormalization.test.ts",
    ),
    (
        "+12345678901234",
        None,
        None,
        "uid2-operator InputNormalizationTest.java; uid2-client-python tests/test_normalization.py; uid2-android-sdk InputUtilsTest.kt; uid2-ios-sdk IdentityTypeTests.swift; uid2-web-integrations diiNormalization.test.ts",
    ),
    (
        "+123456789012345",
        None,
        None,
        "uid2-operator InputNormalizationTest.java; uid2-client-python tests/test_normalization.py; uid2-android-sdk InputUtilsTest.kt; uid2-ios-sdk IdentityTypeTests.swift; uid2-web-integrations diiNormalization.test.ts",
    ),
    (
        "+11234567890",
        None,
        "H6a42YbZuc0BvzaVGBUVi73p9SDAVnyDXf40eD0KQjE=",
        "IABTechLab/uid2-ios-sdk Tests/UID2Tests/ClientGeneratePayloadTests.swift; normalized form of '1 (123) 456-7890' in IABTechLab/uid2docs i18n/ja/docusaurus-plugin-content-docs/current/getting-started/gs-normalization-encoding.md (older stored version) and IABTechLab/uid2docs api/v2/README.md (older stored version, 'Phone Number Hash Encoding' table)",
    ),
    (
        "+6512345678",
        None,
        "xn2K5iZn+pV1H0nXXILY8ggcGt9dClVnIX13SXVVpZ8=",
        "IABTechLab/uid2-ios-sdk Tests/UID2Tests/ClientGeneratePayloadTests.swift; doc example 'Singapore: 65 1243 5678 is normalized to +6512345678' in IABTechLab/uid2docs docs/getting-started/gs-normalization-encoding.md (digits differ: 1243 vs 1234 -- doc typo)",
    ),
    (
        "+61212345678",
        None,
        "J24LFuwzgT5ElsjMwcqE40S8VtUoWXFCZgkq+PDSD+c=",
        "IABTechLab/uid2-ios-sdk Tests/UID2Tests/ClientGeneratePayloadTests.swift; doc example 'Sydney: (02) 1234 5678 -> +61212345678' in IABTechLab/uid2docs docs/getting-started/gs-normalization-encoding.md",
    ),
    (
        "+441234567890",
        None,
        "Rx8SW4ZyKqbPypXmswDNuq0SPxStFXBTG/yvPns/2NQ=",
        "IABTechLab/uid2docs docs/endpoints/post-identity-map.md (v2/v3 request examples) -- pairing IMPLIED by parallel order of 'phone' and 'phone_hash' example arrays",
    ),
    (
        "+123445556677",
        None,
        None,
        "IABTechLab/uid2docs api/v2/README.md (older stored version, 'Phone Number Normalization') and older Japanese API README -- normalized form of '+123 44 555-66-77'",
    ),
    (
        "+1111111111",
        None,
        None,
        "IABTechLab/uid2docs api/v1/endpoints/post-identity-map.md / api/v2 identity-map examples (older docs) -- request example input",
    ),
    (
        "+2222222222",
        None,
        None,
        "IABTechLab/uid2docs api/v1/endpoints/post-identity-map.md / api/v2 identity-map examples (older docs) -- request example input",
    ),
]

# (raw, source) -- isPhoneNumberNormalized(raw) == False / not accepted
PHONE_INVALID = [
    (
        None,
        "uid2-operator InputNormalizationTest.java; uid2-client-python tests/test_normalization.py (null/None only in these two)",
    ),
    (
        "",
        "uid2-operator InputNormalizationTest.java; uid2-client-python tests/test_normalization.py; uid2-android-sdk InputUtilsTest.kt; uid2-ios-sdk IdentityTypeTests.swift; uid2-web-integrations diiNormalization.test.ts",
    ),
    (
        "asdaksjdakfj",
        "uid2-operator InputNormalizationTest.java; uid2-client-python tests/test_normalization.py; uid2-android-sdk InputUtilsTest.kt; uid2-ios-sdk IdentityTypeTests.swift; uid2-web-integrations diiNormalization.test.ts",
    ),
    (
        "DH5qQFhi5ALrdqcPiib8cy0Hwykx6frpqxWCkR0uijs",
        "uid2-operator InputNormalizationTest.java; uid2-client-python tests/test_normalization.py; uid2-android-sdk InputUtilsTest.kt; uid2-ios-sdk IdentityTypeTests.swift; uid2-web-integrations diiNormalization.test.ts",
    ),
    (
        "QFhi5ALrdqcPiib8cy0Hwykx6frpqxWCkR0uijs",
        "uid2-operator InputNormalizationTest.java; uid2-client-python tests/test_normalization.py; uid2-android-sdk InputUtilsTest.kt; uid2-ios-sdk IdentityTypeTests.swift; uid2-web-integrations diiNormalization.test.ts",
    ),
    (
        "06a418f467a14e1631a317b107548a1039d26f12ea45301ab14e7684b36ede58",
        "uid2-operator InputNormalizationTest.java; uid2-client-python tests/test_normalization.py; uid2-android-sdk InputUtilsTest.kt; uid2-ios-sdk IdentityTypeTests.swift; uid2-web-integrations diiNormalization.test.ts",
    ),
    (
        "0C7E6A405862E402EB76A70F8A26FC732D07C32931E9FAE9AB1582911D2E8A3B",
        "uid2-operator InputNormalizationTest.java; uid2-client-python tests/test_normalization.py; uid2-android-sdk InputUtilsTest.kt; uid2-ios-sdk IdentityTypeTests.swift; uid2-web-integrations diiNormalization.test.ts",
    ),
    (
        "+",
        "uid2-operator InputNormalizationTest.java; uid2-client-python tests/test_normalization.py; uid2-android-sdk InputUtilsTest.kt; uid2-ios-sdk IdentityTypeTests.swift; uid2-web-integrations diiNormalization.test.ts",
    ),
    (
        "12345678",
        "uid2-operator InputNormalizationTest.java; uid2-client-python tests/test_normalization.py; uid2-android-sdk InputUtilsTest.kt; uid2-ios-sdk IdentityTypeTests.swift; uid2-web-integrations diiNormalization.test.ts",
    ),
    (
        "123456789",
        "uid2-operator InputNormalizationTest.java; uid2-client-python tests/test_normalization.py; uid2-android-sdk InputUtilsTest.kt; uid2-ios-sdk IdentityTypeTests.swift; uid2-web-integrations diiNormalization.test.ts",
    ),
    (
        "1234567890",
        "uid2-operator InputNormalizationTest.java; uid2-client-python tests/test_normalization.py; uid2-android-sdk InputUtilsTest.kt; uid2-ios-sdk IdentityTypeTests.swift; uid2-web-integrations diiNormalization.test.ts",
    ),
    (
        "+12345678",
        "uid2-operator InputNormalizationTest.java; uid2-client-python tests/test_normalization.py; uid2-android-sdk InputUtilsTest.kt; uid2-ios-sdk IdentityTypeTests.swift; uid2-web-integrations diiNormalization.test.ts",
    ),
    (
        "+123456789",
        "uid2-operator InputNormalizationTest.java; uid2-client-python tests/test_normalization.py; uid2-android-sdk InputUtilsTest.kt; uid2-ios-sdk IdentityTypeTests.swift; uid2-web-integrations diiNormalization.test.ts",
    ),
    (
        "+ 12345678",
        "uid2-operator InputNormalizationTest.java; uid2-client-python tests/test_normalization.py; uid2-android-sdk InputUtilsTest.kt; uid2-ios-sdk IdentityTypeTests.swift; uid2-web-integrations diiNormalization.test.ts",
    ),
    (
        "+ 123456789",
        "uid2-operator InputNormalizationTest.java; uid2-client-python tests/test_normalization.py; uid2-android-sdk InputUtilsTest.kt; uid2-ios-sdk IdentityTypeTests.swift; uid2-web-integrations diiNormalization.test.ts",
    ),
    (
        "+ 1234 5678",
        "uid2-operator InputNormalizationTest.java; uid2-client-python tests/test_normalization.py; uid2-android-sdk InputUtilsTest.kt; uid2-ios-sdk IdentityTypeTests.swift; uid2-web-integrations diiNormalization.test.ts",
    ),
    (
        "+ 1234 56789",
        "uid2-operator InputNormalizationTest.java; uid2-client-python tests/test_normalization.py; uid2-android-sdk InputUtilsTest.kt; uid2-ios-sdk IdentityTypeTests.swift; uid2-web-integrations diiNormalization.test.ts",
    ),
    (
        "+1234567890123456",
        "uid2-operator InputNormalizationTest.java; uid2-client-python tests/test_normalization.py; uid2-android-sdk InputUtilsTest.kt; uid2-ios-sdk IdentityTypeTests.swift; uid2-web-integrations diiNormalization.test.ts",
    ),
    (
        "+1234567890A",
        "uid2-operator InputNormalizationTest.java; uid2-client-python tests/test_normalization.py; uid2-android-sdk InputUtilsTest.kt; uid2-ios-sdk IdentityTypeTests.swift; uid2-web-integrations diiNormalization.test.ts",
    ),
    (
        "+1234567890 ",
        "uid2-operator InputNormalizationTest.java; uid2-client-python tests/test_normalization.py; uid2-android-sdk InputUtilsTest.kt; uid2-ios-sdk IdentityTypeTests.swift; uid2-web-integrations diiNormalization.test.ts",
    ),
    (
        "+1234567890+",
        "uid2-operator InputNormalizationTest.java; uid2-client-python tests/test_normalization.py; uid2-android-sdk InputUtilsTest.kt; uid2-ios-sdk IdentityTypeTests.swift; uid2-web-integrations diiNormalization.test.ts",
    ),
    (
        "+12345+67890",
        "uid2-operator InputNormalizationTest.java; uid2-client-python tests/test_normalization.py; uid2-android-sdk InputUtilsTest.kt; uid2-ios-sdk IdentityTypeTests.swift; uid2-web-integrations diiNormalization.test.ts",
    ),
    (
        "555-555-5555",
        "uid2-operator InputNormalizationTest.java; uid2-client-python tests/test_normalization.py; uid2-android-sdk InputUtilsTest.kt; uid2-ios-sdk IdentityTypeTests.swift; uid2-web-integrations diiNormalization.test.ts",
    ),
    (
        "(555) 555-5555",
        "uid2-operator InputNormalizationTest.java; uid2-client-python tests/test_normalization.py; uid2-android-sdk InputUtilsTest.kt; uid2-ios-sdk IdentityTypeTests.swift; uid2-web-integrations diiNormalization.test.ts",
    ),
]

# (human_input, e164_normalized, source) -- caller-side normalization examples from the docs; the human_input itself is NOT accepted by UID2
PHONE_NORMALIZATION_EXAMPLES = [
    (
        "1 (234) 567-8901",
        "+12345678901",
        "IABTechLab/uid2docs docs/getting-started/gs-normalization-encoding.md (US example; also 'Raw phone number' row in newer version)",
    ),
    (
        "65 1243 5678",
        "+6512345678",
        "IABTechLab/uid2docs docs/getting-started/gs-normalization-encoding.md (Singapore) -- NOTE digits in raw (1243) do not match normalized (1234): doc typo",
    ),
    (
        "(02) 1234 5678",
        "+61212345678",
        "IABTechLab/uid2docs docs/getting-started/gs-normalization-encoding.md (Sydney; drop trunk 0, add country code 61)",
    ),
    (
        "1 (123) 456-7890",
        "+11234567890",
        "IABTechLab/uid2docs i18n/ja/docusaurus-plugin-content-docs/current/getting-started/gs-normalization-encoding.md (older stored version); IABTechLab/uid2docs api/v2/README.md (older stored version, 'Phone Number Hash Encoding' table)",
    ),
    (
        "+123 44 555-66-77",
        "+123445556677",
        "IABTechLab/uid2docs api/v2/README.md (older stored version, 'Phone Number Normalization')",
    ),
]

// CRemote.h - thin, typed wrappers over libcurl's variadic calls and the two
// OpenSSL digests the S3 signer needs. No policy lives here: every function
// is one library call with fixed argument types so Swift can call it.
#ifndef VDUSE_BLK_CREMOTE_H
#define VDUSE_BLK_CREMOTE_H

#include <curl/curl.h>
#include <stddef.h>
#include <stdint.h>

typedef size_t (*vb_curl_data_cb)(char *data, size_t size, size_t nmemb, void *user);

/// curl_global_init(CURL_GLOBAL_DEFAULT); safe to call more than once.
int vb_curl_global_init(void);

CURLcode vb_curl_setopt_long(CURL *easy, CURLoption option, long value);
CURLcode vb_curl_setopt_off(CURL *easy, CURLoption option, curl_off_t value);
/// String options (curl copies the string).
CURLcode vb_curl_setopt_str(CURL *easy, CURLoption option, const char *value);
/// slists and other pointer-valued options.
CURLcode vb_curl_setopt_ptr(CURL *easy, CURLoption option, const void *value);
/// Body callback (CURLOPT_WRITEFUNCTION + CURLOPT_WRITEDATA).
CURLcode vb_curl_set_body_callback(CURL *easy, vb_curl_data_cb callback, void *user);
/// Header-line callback (CURLOPT_HEADERFUNCTION + CURLOPT_HEADERDATA).
CURLcode vb_curl_set_header_callback(CURL *easy, vb_curl_data_cb callback, void *user);
/// CURLOPT_PRIVATE, read back with vb_curl_private.
CURLcode vb_curl_set_private(CURL *easy, void *user);
void *vb_curl_private(CURL *easy);

CURLcode vb_curl_info_long(CURL *easy, CURLINFO info, long *value);
CURLcode vb_curl_info_off(CURL *easy, CURLINFO info, curl_off_t *value);

CURLMcode vb_curl_multi_setopt_long(CURLM *multi, CURLMoption option, long value);

/// The finished transfer of a CURLMSG_DONE message (NULL for other messages).
CURL *vb_curl_msg_done(CURLMsg *msg, CURLcode *result);


/// SHA-256 of `len` bytes into `out[32]`.
void vb_sha256(const void *data, size_t len, uint8_t *out);
/// HMAC-SHA256 into `out[32]`; 0 on success, -1 on failure.
int vb_hmac_sha256(const void *key, size_t key_len, const void *data, size_t len, uint8_t *out);

#endif

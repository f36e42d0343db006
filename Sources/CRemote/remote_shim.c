#include "CRemote.h"
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <errno.h>

int vb_curl_global_init(void) { return (int)curl_global_init(CURL_GLOBAL_DEFAULT); }

CURLcode vb_curl_setopt_long(CURL *easy, CURLoption option, long value) {
    return curl_easy_setopt(easy, option, value);
}

CURLcode vb_curl_setopt_off(CURL *easy, CURLoption option, curl_off_t value) {
    return curl_easy_setopt(easy, option, value);
}

CURLcode vb_curl_setopt_str(CURL *easy, CURLoption option, const char *value) {
    return curl_easy_setopt(easy, option, value);
}

CURLcode vb_curl_setopt_ptr(CURL *easy, CURLoption option, const void *value) {
    return curl_easy_setopt(easy, option, value);
}

CURLcode vb_curl_set_body_callback(CURL *easy, vb_curl_data_cb callback, void *user) {
    CURLcode rc = curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, callback);
    if (rc != CURLE_OK) return rc;
    return curl_easy_setopt(easy, CURLOPT_WRITEDATA, user);
}

CURLcode vb_curl_set_header_callback(CURL *easy, vb_curl_data_cb callback, void *user) {
    CURLcode rc = curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, callback);
    if (rc != CURLE_OK) return rc;
    return curl_easy_setopt(easy, CURLOPT_HEADERDATA, user);
}

CURLcode vb_curl_set_private(CURL *easy, void *user) { return curl_easy_setopt(easy, CURLOPT_PRIVATE, user); }

void *vb_curl_private(CURL *easy) {
    void *p = NULL;
    if (curl_easy_getinfo(easy, CURLINFO_PRIVATE, &p) != CURLE_OK) return NULL;
    return p;
}

CURLcode vb_curl_info_long(CURL *easy, CURLINFO info, long *value) { return curl_easy_getinfo(easy, info, value); }

CURLcode vb_curl_info_off(CURL *easy, CURLINFO info, curl_off_t *value) { return curl_easy_getinfo(easy, info, value); }

CURLMcode vb_curl_multi_setopt_long(CURLM *multi, CURLMoption option, long value) {
    return curl_multi_setopt(multi, option, value);
}

CURL *vb_curl_msg_done(CURLMsg *msg, CURLcode *result) {
    if (msg == NULL || msg->msg != CURLMSG_DONE) return NULL;
    if (result) *result = msg->data.result;
    return msg->easy_handle;
}

void vb_sha256(const void *data, size_t len, uint8_t *out) { SHA256((const unsigned char *)data, len, out); }

int vb_hmac_sha256(const void *key, size_t key_len, const void *data, size_t len, uint8_t *out) {
    unsigned int out_len = 0;
    if (HMAC(EVP_sha256(), key, (int)key_len, (const unsigned char *)data, len, out, &out_len) == NULL) return -1;
    return out_len == 32 ? 0 : -1;
}

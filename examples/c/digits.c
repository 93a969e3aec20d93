/*
 * digits.c: run the bundled digits CNN through Morsel's C API.
 *
 *   digits MODEL.morsel INPUT.npy [--budget BYTES]
 *
 * Opens the model, prints its inputs and outputs, plans the activation
 * memory for the input's shape, runs it with caller-owned buffers and prints
 * the 10 logits and their argmax. With --budget the session gets that
 * memory limit, so a budget below the plan shows the error a caller gets.
 * INPUT.npy is a little-endian float32 .npy file (such as
 * examples/digits/sample_input.npy, shape (1, 1, 8, 8)).
 *
 * Build: see examples/c/Makefile (`make -C examples/c run`).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "morsel.h"

#define MAX_RANK 8

static int fail(const char *what, MorselStatus status) {
    fprintf(stderr, "%s failed: %s: %s\n", what, morsel_status_name(status), morsel_last_error());
    return 1;
}

static const char *dtype_name(int32_t dtype) {
    switch (dtype) {
    case MORSEL_DTYPE_F32: return "f32";
    case MORSEL_DTYPE_F16: return "f16";
    case MORSEL_DTYPE_BF16: return "bf16";
    case MORSEL_DTYPE_I8: return "i8";
    case MORSEL_DTYPE_U8: return "u8";
    case MORSEL_DTYPE_I32: return "i32";
    case MORSEL_DTYPE_I64: return "i64";
    case MORSEL_DTYPE_BOOL: return "bool";
    default: return "?";
    }
}

static void print_dims(const int64_t *dims, size_t rank) {
    printf("[");
    for (size_t i = 0; i < rank; i++) {
        if (dims[i] < 0) printf("%s?", i ? ", " : "");
        else printf("%s%lld", i ? ", " : "", (long long)dims[i]);
    }
    printf("]");
}

/* Read a float32 .npy file (format 1.x/2.x, little-endian, C order).
 * Returns the data (malloc'd) and fills dims/rank, or NULL with a message. */
static float *read_npy_f32(const char *path, int64_t *dims, size_t *rank, size_t *count) {
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); return NULL; }
    unsigned char pre[12];
    if (fread(pre, 1, 10, f) != 10 || memcmp(pre, "\x93NUMPY", 6) != 0) {
        fprintf(stderr, "%s: not a .npy file\n", path);
        fclose(f);
        return NULL;
    }
    size_t header_len = (size_t)pre[8] | (size_t)pre[9] << 8;
    if (pre[6] >= 2) { /* version 2+: 4-byte header length */
        if (fread(pre + 10, 1, 2, f) != 2) { fclose(f); return NULL; }
        header_len |= (size_t)pre[10] << 16 | (size_t)pre[11] << 24;
    }
    char *header = calloc(header_len + 1, 1);
    if (!header || fread(header, 1, header_len, f) != header_len) {
        fprintf(stderr, "%s: truncated header\n", path);
        free(header);
        fclose(f);
        return NULL;
    }
    const char *shape = strstr(header, "'shape': (");
    if (!strstr(header, "'descr': '<f4'") || !strstr(header, "'fortran_order': False") || !shape) {
        fprintf(stderr, "%s: expected little-endian float32 in C order, header %s\n", path, header);
        free(header);
        fclose(f);
        return NULL;
    }
    *rank = 0;
    *count = 1;
    for (const char *p = shape + strlen("'shape': ("); *p && *p != ')';) {
        char *end;
        long long d = strtoll(p, &end, 10);
        if (end == p) { p++; continue; } /* skip ", " */
        if (*rank == MAX_RANK || d < 0) { free(header); fclose(f); return NULL; }
        dims[(*rank)++] = d;
        *count *= (size_t)d;
        p = end;
    }
    free(header);
    float *data = malloc(*count * sizeof(float) + 1);
    if (!data || fread(data, sizeof(float), *count, f) != *count) {
        fprintf(stderr, "%s: expected %zu float32 values\n", path, *count);
        free(data);
        fclose(f);
        return NULL;
    }
    fclose(f);
    return data;
}

int main(int argc, char **argv) {
    if (argc != 3 && !(argc == 5 && strcmp(argv[3], "--budget") == 0)) {
        fprintf(stderr, "usage: %s MODEL.morsel INPUT.npy [--budget BYTES]\n", argv[0]);
        return 2;
    }
    size_t budget = argc == 5 ? (size_t)strtoull(argv[4], NULL, 10) : 0;
    printf("morsel %s\n", morsel_version());

    MorselModel *model = NULL;
    MorselStatus st = morsel_model_open(argv[1], &model);
    if (st != MORSEL_STATUS_OK) return fail("morsel_model_open", st);

    size_t n_in = 0, n_out = 0;
    morsel_model_input_count(model, &n_in);
    morsel_model_output_count(model, &n_out);
    for (size_t side = 0; side < 2; side++) {
        for (size_t i = 0; i < (side ? n_out : n_in); i++) {
            const char *name;
            int32_t dtype;
            size_t rank;
            int64_t dims[MAX_RANK];
            if (side == 0) {
                morsel_model_input_name(model, i, &name);
                morsel_model_input_dtype(model, i, &dtype);
                morsel_model_input_rank(model, i, &rank);
                st = morsel_model_input_dims(model, i, dims, MAX_RANK);
            } else {
                morsel_model_output_name(model, i, &name);
                morsel_model_output_dtype(model, i, &dtype);
                morsel_model_output_rank(model, i, &rank);
                st = morsel_model_output_dims(model, i, dims, MAX_RANK);
            }
            if (st != MORSEL_STATUS_OK) return fail("morsel_model_*_dims", st);
            printf("%s %s: %s ", side ? "output" : "input", name, dtype_name(dtype));
            print_dims(dims, rank);
            printf("\n");
        }
    }
    if (n_in != 1 || n_out != 1) {
        fprintf(stderr, "this example runs models with one input and one output\n");
        return 1;
    }

    int64_t dims[MAX_RANK];
    size_t rank, count;
    float *x = read_npy_f32(argv[2], dims, &rank, &count);
    if (!x) return 1;
    const char *input_name;
    morsel_model_input_name(model, 0, &input_name);
    MorselInput input = {
        .name = input_name,
        .dtype = MORSEL_DTYPE_F32,
        .dims = dims,
        .rank = rank,
        .data = x,
        .data_len = count * sizeof(float),
    };

    MorselSession *session = NULL;
    st = morsel_session_new(model, 1, budget, &session);
    if (st != MORSEL_STATUS_OK) return fail("morsel_session_new", st);

    size_t planned = 0;
    st = morsel_session_planned_bytes(session, &input, 1, &planned);
    printf("planned activation memory: %zu bytes", planned);
    if (budget) printf(" (budget %zu bytes)", budget);
    printf("\n");
    if (st != MORSEL_STATUS_OK) fail("morsel_session_planned_bytes", st);

    /* Start with a buffer that is too small on purpose: the run says how
     * much it needs, and the second run fills the grown buffer. */
    int64_t out_dims[MAX_RANK];
    MorselOutput output = {.data = NULL, .capacity = 0, .dims = out_dims, .dims_capacity = MAX_RANK};
    st = morsel_session_run(session, &input, 1, &output, 1);
    if (st == MORSEL_STATUS_BUFFER_TOO_SMALL) {
        output.data = malloc(output.data_len);
        output.capacity = output.data_len;
        if (!output.data) return 1;
        st = morsel_session_run(session, &input, 1, &output, 1);
    }
    if (st != MORSEL_STATUS_OK) {
        int rc = fail("morsel_session_run", st);
        morsel_session_free(session);
        morsel_model_free(model);
        free(x);
        return rc;
    }
    if (output.dtype != MORSEL_DTYPE_F32) {
        fprintf(stderr, "expected f32 logits, got %s\n", dtype_name(output.dtype));
        return 1;
    }

    const float *logits = output.data;
    size_t n = output.data_len / sizeof(float);
    printf("logits ");
    print_dims(out_dims, output.rank);
    printf(":");
    size_t best = 0;
    for (size_t i = 0; i < n; i++) {
        printf(" %.9g", logits[i]);
        if (logits[i] > logits[best]) best = i;
    }
    printf("\nargmax %zu\n", best);

    size_t held = 0;
    morsel_session_held_bytes(session, &held);
    printf("session holds %zu bytes\n", held);
    morsel_session_free(session);
    /* Names from morsel_model_input_name live as long as the model: free it
     * last (a session alone would keep the model's graph and weights alive). */
    morsel_model_free(model);
    free(output.data);
    free(x);
    return 0;
}
